import XCTest
@testable import Engine
import GGUF
import Tokenizer
import TestSupport

/// A plain backtracking matcher over the grammar as written (code points, no automaton),
/// the reference the compiled byte automaton is checked against.
private struct ReferenceMatcher {
    let rules: [String: [[GrammarSyntax.Term]]]
    let input: [UInt32]
    private var memo: [String: Set<Int>] = [:]

    init(_ syntax: GrammarSyntax, _ text: String) {
        var r: [String: [[GrammarSyntax.Term]]] = [:]
        for rule in syntax.rules { r[rule.name, default: []] += rule.alternatives }
        rules = r
        input = text.unicodeScalars.map(\.value)
    }

    mutating func matches() -> Bool { ends(.reference("root"), at: 0).contains(input.count) }

    mutating func ends(_ seq: [GrammarSyntax.Term], at start: Int) -> Set<Int> {
        var current: Set<Int> = [start]
        for t in seq {
            var next = Set<Int>()
            for p in current { next.formUnion(ends(t, at: p)) }
            current = next
            if current.isEmpty { break }
        }
        return current
    }

    mutating func ends(_ t: GrammarSyntax.Term, at p: Int) -> Set<Int> {
        switch t {
        case .literal(let points):
            return p + points.count <= input.count && Array(input[p..<(p + points.count)]) == points ? [p + points.count] : []
        case .characters(let set):
            return p < input.count && set.contains(input[p]) ? [p + 1] : []
        case .reference(let name):
            let key = "\(name)@\(p)"
            if let m = memo[key] { return m }
            memo[key] = []
            var out = Set<Int>()
            for alt in rules[name]! { out.formUnion(ends(alt, at: p)) }
            memo[key] = out
            return out
        case .group(let alts):
            var out = Set<Int>()
            for alt in alts { out.formUnion(ends(alt, at: p)) }
            return out
        case .repetition(let inner, let low, let high):
            var out = Set<Int>()
            var current: Set<Int> = [p]
            var count = 0
            while true {
                if count >= low { out.formUnion(current) }
                if let high, count == high { break }
                if count > low + input.count + 1 || current.isEmpty { break }
                var next = Set<Int>()
                for q in current { next.formUnion(ends(inner, at: q)) }
                current = next
                count += 1
            }
            return out
        }
    }
}

final class GrammarTests: XCTestCase {
    /// SmolLM2's vocabulary (49,152 tokens; every byte is one of them).
    private func automaton(_ gbnf: String) throws -> GrammarAutomaton {
        try GrammarAutomaton(grammar: Grammar(gbnf: gbnf), trie: Self.byteTrie)
    }

    private static let byteTrie: TokenTrie = {
        TokenTrie(tokenizer: try! Tokenizer(file: TestSupport.model(.smolLM2)))
    }()

    private func accepts(_ a: GrammarAutomaton, _ text: String) -> Bool {
        a.isAccepting(a.next(a.initial, bytes: Array(text.utf8)))
    }

    static let grammars: [(gbnf: String, alphabet: [String])] = [
        ("""
         root ::= expr
         expr ::= term (("+" | "-") term)*
         term ::= factor (("*" | "/") factor)*
         factor ::= [0-9]+ | "(" expr ")"
         """, ["1", "2", "0", "+", "-", "*", "/", "(", ")", "x"]),
        (#"root ::= "a"{2,4} "b"? [xy]{0,3} "c"{3} ("d"{2,})?"#, ["a", "b", "x", "y", "c", "d"]),
        ("root ::= [α-ω]+ [^a-z\"]* \"é\" | \"€\"{1,2}", ["α", "β", "ω", "a", "\"", "é", "€", "Z", "日"]),
        ("""
         root ::= ("a" | "ab") ("b" | "bc")* "c"?   # ambiguous on purpose
         """, ["a", "b", "c"]),
        ("""
         root   ::= value
         value  ::= object | array | string | "true" | "null"
         object ::= "{" ( string ":" value ("," string ":" value)* )? "}"
         array  ::= "[" ( value ("," value)* )? "]"
         string ::= "\\"" ( [^"\\\\] | "\\\\" ["\\\\n] )* "\\""
         """, ["{", "}", "[", "]", "\"", ":", ",", "k", "\\", "n", "true", "null"]),
        ("""
         root ::= list
         list ::= "[" item ("," item)* "]"
         item ::= atom | list
         atom ::= ("a" | "ab") ("b" | "bc")* "c"?   # ambiguous, at any depth
         """, ["[", "]", ",", "a", "b", "c"]),
    ]

    func testAutomatonAgreesWithReferenceMatcherOnRandomStrings() throws {
        var rng = SplitMix64(seed: 42)
        for (gbnf, alphabet) in Self.grammars {
            let syntax = try GBNFParser.parse(gbnf)
            let a = try automaton(gbnf)
            var positives = 0
            for i in 0..<3000 {
                var text: String
                if i % 2 == 0 {
                    let length = Int(rng.next() % 12)
                    text = (0..<length).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }.joined()
                } else {
                    // A string the grammar derives, every third one damaged by one edit.
                    var scalars = Array(Self.derive(.reference("root"), syntax, &rng, depth: 0).unicodeScalars)
                    if i % 3 == 0, !scalars.isEmpty {
                        let at = Int(rng.next() % UInt64(scalars.count))
                        if rng.next() % 2 == 0 { scalars.remove(at: at) } else { scalars.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))].unicodeScalars.first!, at: at) }
                    }
                    text = String(String.UnicodeScalarView(scalars))
                }
                var reference = ReferenceMatcher(syntax, text)
                let expected = reference.matches()
                if expected { positives += 1 }
                XCTAssertEqual(accepts(a, text), expected, "\(text.debugDescription) under \(gbnf)")
            }
            XCTAssertGreaterThan(positives, 10, "the random strings should include matches: \(gbnf)")
        }
    }

    /// A random string derived from `term` (bounded depth: past it, the shortest choices).
    static func derive(_ term: GrammarSyntax.Term, _ g: GrammarSyntax, _ rng: inout SplitMix64, depth: Int) -> String {
        switch term {
        case .literal(let points): return String(String.UnicodeScalarView(points.map { Unicode.Scalar($0)! }))
        case .characters(let set):
            let r = set.ranges[Int(rng.next() % UInt64(set.ranges.count))]
            var c = r.lowerBound + UInt32(rng.next() % UInt64(min(r.upperBound - r.lowerBound + 1, 200)))
            if (0xD800...0xDFFF).contains(c) { c = 0x41 }
            return String(Unicode.Scalar(c)!)
        case .reference(let name):
            let alts = g.rules.first { $0.name == name }!.alternatives
            let alt = depth > 6 ? alts.min { $0.count < $1.count }! : alts[Int(rng.next() % UInt64(alts.count))]
            return alt.map { derive($0, g, &rng, depth: depth + 1) }.joined()
        case .group(let alts):
            let alt = alts[Int(rng.next() % UInt64(alts.count))]
            return alt.map { derive($0, g, &rng, depth: depth + 1) }.joined()
        case .repetition(let inner, let low, let high):
            let extra = depth > 6 ? 0 : Int(rng.next() % UInt64((high ?? low + 3) - low + 1))
            return (0..<(low + extra)).map { _ in derive(inner, g, &rng, depth: depth + 1) }.joined()
        }
    }

    func testEveryPrefixOfAMatchIsAliveAndShortestCompletionFinishes() throws {
        let a = try automaton(Self.grammars[4].gbnf)
        let text = #"{"k":["true",{"n":null}],"kk":"a\"b"}"#
        var s = a.initial
        for b in text.utf8 {
            XCTAssertGreaterThanOrEqual(s, 0)
            let finish = a.shortestCompletion(s)
            XCTAssertEqual(Int32(finish.count), a.completion(s))
            XCTAssertTrue(a.isAccepting(a.next(s, bytes: finish)), "finishing \(String(decoding: finish, as: UTF8.self))")
            s = a.next(s, b)
        }
        XCTAssertTrue(a.isAccepting(s))
        let open = a.next(a.initial, bytes: Array(#"{"k":[{"n":"ab"#.utf8))
        XCTAssertEqual(String(decoding: a.shortestCompletion(open), as: UTF8.self), #""}]}"#)
    }

    /// Every state's mask equals checking every token, whether its top frames' split was
    /// walked for it or shared with a state seen before (XGrammar's split).
    func testTokenMaskEqualsCheckingEveryToken() throws {
        let trie = Self.byteTrie
        func assertExact(_ a: GrammarAutomaton, _ s: Int32, _ what: String) {
            XCTAssertGreaterThanOrEqual(s, 0, what)
            guard case .mask(let words) = a.allowed(s, budget: 1 << 20) else { return XCTFail("no budget, no plan") }
            var wrong: [String] = []
            for t in 0..<trie.vocabularySize where (words[t >> 6] & (1 << UInt64(t & 63)) != 0) != (a.next(s, token: t) >= 0) {
                wrong.append(String(decoding: trie.tokenBytes[t], as: UTF8.self))
            }
            XCTAssertEqual(Array(wrong.prefix(8)), [], "\(wrong.count) tokens wrong after \(what)")
        }
        var rng = SplitMix64(seed: 7)
        var walks = (cached: 0, tiny: 0)
        for (gbnf, _) in Self.grammars {
            let syntax = try GBNFParser.parse(gbnf)
            // The same with caches so small that masks and splits are evicted all the time
            // (the budget test below does the same for end maps and budget groups).
            let a = try automaton(gbnf), tiny = try automaton(gbnf)
            tiny.maxCachedMasks = 4
            for _ in 0..<3 {
                let text = Array(Self.derive(.reference("root"), syntax, &rng, depth: 0).utf8)
                var s = a.initial, t = tiny.initial
                for (i, b) in text.enumerated() {
                    if i % 2 == 0 {
                        assertExact(a, s, String(decoding: text[..<i], as: UTF8.self))
                        assertExact(tiny, t, String(decoding: text[..<i], as: UTF8.self) + " (tiny caches)")
                    }
                    s = a.next(s, b)
                    t = tiny.next(t, b)
                }
            }
            walks.cached += a.counters.walks
            walks.tiny += tiny.counters.walks
        }
        XCTAssertGreaterThan(walks.tiny, walks.cached, "the tiny caches evicted splits and walked them again")
        // Nested ever deeper, a string's state is new each time, and its top frames are not.
        let a = try automaton(Self.grammars[4].gbnf)
        var prefix = ""
        for depth in 1...6 {
            prefix += #"{"k":["#
            for inside in [#""ab"#, #""ab\"#, #""ab","#, #""ab",{"#] {
                let walks = a.counters.walks, shared = a.counters.splitMasks
                assertExact(a, a.next(a.initial, bytes: Array((prefix + inside).utf8)), prefix + inside)
                if depth >= 3 {
                    XCTAssertEqual(a.counters.walks, walks, "nested \(depth) deep, \(inside) shares the split of a shallower state")
                    XCTAssertEqual(a.counters.splitMasks, shared + 1)
                }
            }
        }
    }

    /// The constraint as a logits processor: kept tokens advance it, a copy is independent,
    /// a rollback returns to the state before the tokens taken back.
    func testConstraintAcceptsCopiesAndRollsBack() throws {
        let a = try automaton(Self.grammars[4].gbnf)
        let tokenizer = Self.byteTrie.tokenizer
        let tokens = tokenizer.encode(#"{"k":["#, addSpecial: false)
        var c = GrammarConstraint(automaton: a, maxTokens: 100)
        for t in tokens { c.accept(t) }
        XCTAssertEqual(c.state, a.next(a.initial, bytes: Array(#"{"k":["#.utf8)))
        var copy = c
        copy.rollback(1)
        XCTAssertEqual(copy.state, a.next(a.initial, bytes: tokens.dropLast().flatMap { Self.byteTrie.tokenBytes[$0] }))
        XCTAssertEqual(c.state, a.next(a.initial, bytes: Array(#"{"k":["#.utf8)), "the original is untouched")
        var logits = [Float](repeating: 0, count: Self.byteTrie.vocabularySize)
        c.process(&logits, history: [])
        let allowed = logits.indices.filter { logits[$0] > -.infinity }
        XCTAssertFalse(allowed.isEmpty)
        for t in allowed { XCTAssertGreaterThanOrEqual(a.next(c.state, token: t), 0) }
    }

    func testBudgetSteersToAShortFinish() throws {
        let a = try automaton(Self.grammars[4].gbnf)
        let s = a.next(a.initial, bytes: Array(#"{"k":["#.utf8))
        XCTAssertEqual(a.completion(s), 2, "the shortest finish closes the array and the object")
        XCTAssertEqual(String(decoding: a.shortestCompletion(s), as: UTF8.self), "]}")
        XCTAssertEqual(a.finishingTokens(s).flatMap { Self.byteTrie.tokenBytes[$0] }, Array("]}".utf8))
        // Shallow, and nested deep enough that the mask comes from a split shared with a
        // shallower state (its ends are cut-state ends put back on the frames cut off).
        let nested = try automaton(Self.grammars[5].gbnf)
        // And the same with caches so small that every group and end map is evicted.
        let tiny = try automaton(Self.grammars[4].gbnf), tinyNested = try automaton(Self.grammars[5].gbnf)
        tiny.maxCachedMasks = 4
        tinyNested.maxCachedMasks = 4
        let objects = [#"{"k":["#, #"{"k":[{"k":["a"#, #"{"k":[{"k":[{"k":[{"k":["ab"#, #"{"k":[{"k":[{"k":[{"k":["ab","#]
        let arrays = ["[[[[ab", "[[[[abb,", "[[[a,[ab", "[[[a,[abbc,[a"]
        for (a, prefix) in objects.map({ (a, $0) }) + arrays.map({ (nested, $0) }) + objects.map({ (tiny, $0) }) + arrays.map({ (tinyNested, $0) }) {
            let s = a.next(a.initial, bytes: Array(prefix.utf8))
            let plan = a.finishingTokens(s)
            for budget in 0...(plan.count + 2) {
                switch a.allowed(s, budget: budget) {
                case .mask(let words):
                    // Exactly the tokens whose finish fits.
                    var count = 0
                    for t in 0..<Self.byteTrie.vocabularySize {
                        let end = a.next(s, token: t)
                        let fits = end >= 0 && a.finishingTokens(end).count <= budget
                        XCTAssertEqual(words[t >> 6] & (1 << UInt64(t & 63)) != 0, fits,
                                       "\(prefix) + \(String(decoding: Self.byteTrie.tokenBytes[t], as: UTF8.self)) under \(budget)")
                        if fits { count += 1 }
                    }
                    XCTAssertGreaterThan(count, 0)
                case .plan(let p):
                    XCTAssertEqual(p, plan, "with no room for anything else, the shortest finish")
                    XCTAssertLessThan(budget, plan.count)
                }
            }
        }
        XCTAssertGreaterThan(a.counters.splitMasks, 0, "a deep state's mask came from a shared split")
        XCTAssertGreaterThan(nested.counters.splitMasks, 0)
    }

    /// Grammars built to explode compile and run in bounded time: empty alternatives that
    /// multiply, a chain of 20,000 rules written backwards.
    func testHostileGrammarsStayFast() throws {
        let started = Date()
        let a = try automaton("root ::= " + String(repeating: "n ", count: 40) + "\"x\"\nn ::= \"\" | \"\"")
        XCTAssertTrue(accepts(a, "x"))
        var chain = "a0 ::= \"x\"\n"
        for i in 1..<20_000 { chain += "a\(i) ::= a\(i - 1)\n" }
        let b = try automaton(chain + "root ::= a19999")
        XCTAssertTrue(accepts(b, "x"))
        XCTAssertLessThan(Date().timeIntervalSince(started), 2)
    }

    func testGrammarErrorsNameTheProblem() {
        func error(_ gbnf: String) -> String {
            do { _ = try Grammar(gbnf: gbnf); return "no error" } catch { return "\(error)" }
        }
        XCTAssertEqual(error("expr ::= \"a\""), "grammar has no 'root' rule")
        XCTAssertEqual(error("root ::= item"), "grammar refers to rule 'item', which is not defined")
        XCTAssertEqual(error("root ::= root \"a\" | \"b\""), "grammar rule 'root' is left-recursive (it can reach itself without consuming a character); rewrite it with repetition")
        XCTAssertEqual(error("root ::= \"a\" root"), "grammar rule 'root' can never finish (every alternative refers to itself)")
        XCTAssertEqual(error("root ::= \"a"), "grammar syntax error at line 1, column 12: unterminated string literal")
        XCTAssertEqual(error("root ::= [b-a]"), "grammar syntax error at line 1, column 14: character range is backwards")
        XCTAssertEqual(error("root ::= \"a\"{1000000}"), "grammar too large: a repetition count above 10000")
        XCTAssertEqual(error(#"root ::= "\uD800""#), "grammar syntax error at line 1, column 13: a surrogate code point (U+D800) is not a character")
        XCTAssertEqual(error("root ::= " + String(repeating: "(", count: 300) + "\"a\"" + String(repeating: ")", count: 300)),
                       "grammar too large: parentheses nested deeper than 200")
        XCTAssertEqual(error("root ::= (\"a\"*)*"), "grammar rule 'root-2' is left-recursive (it can reach itself without consuming a character); rewrite it with repetition")
    }
}
