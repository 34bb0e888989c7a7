/// A grammar compiled to bytes: each rule is a list of alternatives, each a run of elements
/// (a set of bytes to match, or a reference to a rule) ending in `.end`, all in one flat
/// array so that a position in the grammar is one integer. Code points became their UTF-8
/// sequences and repetitions became right-recursive helper rules, so the pushdown automaton
/// (`GrammarAutomaton`) that runs it needs nothing but bytes. Checked once here: every
/// referenced rule exists, no rule is left-recursive, every rule can finish.
public struct Grammar: Sendable {
    enum Element: Equatable, Sendable {
        case bytes(Int32)
        case rule(Int32)
        case end
    }

    let elements: [Element]
    let byteSets: [ByteSet]
    /// Per rule, the positions its alternatives start at.
    let alternatives: [[Int32]]
    let ruleNames: [String]
    let root: Int32
    /// Per position, the fewest bytes from it to the end of its alternative.
    let minSuffix: [Int32]

    /// The most elements a compiled grammar may have (about 16 bytes each with its tables).
    public static let maxElements = 2_000_000
    static let unbounded = Int32.max / 4

    public init(gbnf text: String) throws {
        try self.init(GBNFParser.parse(text))
    }

    init(_ syntax: GrammarSyntax) throws {
        var b = Builder()
        for (name, _) in syntax.rules { b.declare(name) }
        guard let root = b.ids["root"] else { throw GrammarError.missingRoot }
        for (index, rule) in syntax.rules.enumerated() {
            b.bodies[index] = try rule.alternatives.map { try b.sequence($0, in: rule.name) }
        }
        // Lay the rules out: alternatives back to back, each closed by `.end`.
        var elements: [Element] = []
        var alternatives: [[Int32]] = []
        for body in b.bodies {
            var starts: [Int32] = []
            for seq in body {
                starts.append(Int32(elements.count))
                elements += seq
                elements.append(.end)
            }
            alternatives.append(starts)
        }
        guard elements.count <= Self.maxElements else { throw GrammarError.tooLarge("more than \(Self.maxElements) elements") }
        self.elements = elements
        self.alternatives = alternatives
        byteSets = b.byteSets
        ruleNames = b.names
        self.root = root
        minSuffix = try Self.check(elements: elements, alternatives: alternatives, names: b.names, root: root)
    }

    /// Rejects left recursion and rules that cannot finish; returns the suffix lengths.
    private static func check(elements: [Element], alternatives: [[Int32]], names: [String], root: Int32) throws -> [Int32] {
        let n = alternatives.count
        // Fewest bytes each rule can match, by relaxation over the rules in post-order of
        // their references (a rule after those it uses), so that a grammar without
        // recursion settles in one pass whatever order its rules are written in; recursive
        // ones need a pass per cycle they shorten.
        var references = [[Int32]](repeating: [], count: n)
        for r in 0..<n {
            for start in alternatives[r] {
                var p = Int(start)
                while elements[p] != .end {
                    if case .rule(let q) = elements[p] { references[r].append(q) }
                    p += 1
                }
            }
        }
        var order: [Int] = []
        var placed = [Bool](repeating: false, count: n)
        for first in [Int(root)] + Array(0..<n) where !placed[first] {
            var stack: [(Int, Int)] = [(first, 0)]
            placed[first] = true
            while let (r, next) = stack.last {
                if next < references[r].count {
                    stack[stack.count - 1].1 += 1
                    let q = Int(references[r][next])
                    if !placed[q] { placed[q] = true; stack.append((q, 0)) }
                } else {
                    order.append(r)
                    stack.removeLast()
                }
            }
        }
        var minLength = [Int32](repeating: unbounded, count: n)
        var changed = true
        var passes = 0
        while changed {
            changed = false
            passes += 1
            guard passes <= 64 else { throw GrammarError.tooLarge("rule lengths that do not settle in 64 passes") }
            for r in order {
                var best = unbounded
                for start in alternatives[r] {
                    var total: Int32 = 0
                    var p = Int(start)
                    loop: while true {
                        switch elements[p] {
                        case .end: break loop
                        case .bytes: total += 1
                        case .rule(let q): total = min(unbounded, total + minLength[Int(q)])
                        }
                        p += 1
                    }
                    best = min(best, total)
                }
                if best < minLength[r] { minLength[r] = best; changed = true }
            }
        }
        // Left recursion: a rule reachable from itself through prefixes that match nothing.
        var leftEdges = [[Int32]](repeating: [], count: n)
        for r in 0..<n {
            for start in alternatives[r] {
                var p = Int(start)
                while case .rule(let q) = elements[p] {
                    leftEdges[r].append(q)
                    if minLength[Int(q)] != 0 { break }
                    p += 1
                }
            }
        }
        var color = [UInt8](repeating: 0, count: n)  // 0 new, 1 on the path, 2 done
        var reachable = [Bool](repeating: false, count: n)
        for start in 0..<n where color[start] == 0 {
            var stack: [(Int32, Int)] = [(Int32(start), 0)]
            color[start] = 1
            while let (r, next) = stack.last {
                if next < leftEdges[Int(r)].count {
                    stack[stack.count - 1].1 += 1
                    let q = leftEdges[Int(r)][next]
                    if color[Int(q)] == 1 { throw GrammarError.leftRecursion(rule: names[Int(q)]) }
                    if color[Int(q)] == 0 { color[Int(q)] = 1; stack.append((q, 0)) }
                } else {
                    color[Int(r)] = 2
                    stack.removeLast()
                }
            }
        }
        // Every rule reachable from the root must be able to finish.
        var work: [Int32] = [root]
        reachable[Int(root)] = true
        while let r = work.popLast() {
            if minLength[Int(r)] >= unbounded { throw GrammarError.neverFinishes(rule: names[Int(r)]) }
            for start in alternatives[Int(r)] {
                var p = Int(start)
                while elements[p] != .end {
                    if case .rule(let q) = elements[p], !reachable[Int(q)] { reachable[Int(q)] = true; work.append(q) }
                    p += 1
                }
            }
        }
        var suffix = [Int32](repeating: 0, count: elements.count)
        for p in stride(from: elements.count - 1, through: 0, by: -1) {
            switch elements[p] {
            case .end: suffix[p] = 0
            case .bytes: suffix[p] = min(unbounded, 1 + suffix[p + 1])
            case .rule(let q): suffix[p] = min(unbounded, minLength[Int(q)] + suffix[p + 1])
            }
        }
        return suffix
    }

    /// Builds rule bodies from syntax, making helper rules for groups, classes beyond one
    /// byte, and repetitions.
    private struct Builder {
        var names: [String] = []
        var ids: [String: Int32] = [:]
        var bodies: [[[Element]]] = []
        var byteSets: [ByteSet] = []
        var byteSetIndex: [ByteSet: Int32] = [:]
        var classRules: [CodePointSet: Int32] = [:]
        var size = 0

        mutating func declare(_ name: String) {
            guard ids[name] == nil else { return }
            ids[name] = Int32(names.count)
            names.append(name)
            bodies.append([])
        }

        mutating func helper(_ body: [[Element]], for parent: String) throws -> Int32 {
            let id = Int32(names.count)
            names.append("\(parent)-\(id)")
            bodies.append(body)
            return id
        }

        mutating func bytes(_ set: ByteSet) -> Element {
            if let i = byteSetIndex[set] { return .bytes(i) }
            let i = Int32(byteSets.count)
            byteSets.append(set)
            byteSetIndex[set] = i
            return .bytes(i)
        }

        mutating func grow(_ n: Int) throws {
            size += n
            if size > Grammar.maxElements { throw GrammarError.tooLarge("more than \(Grammar.maxElements) elements") }
        }

        mutating func sequence(_ terms: [GrammarSyntax.Term], in rule: String) throws -> [Element] {
            var out: [Element] = []
            for t in terms { out += try term(t, in: rule) }
            try grow(out.count + 1)
            return out
        }

        mutating func term(_ t: GrammarSyntax.Term, in rule: String) throws -> [Element] {
            switch t {
            case .literal(let points):
                return points.flatMap { UTF8Sequences.encode($0) }.map { bytes(ByteSet($0...$0)) }
            case .characters(let set):
                if let id = classRules[set] { return [.rule(id)] }
                let sequences = UTF8Sequences.of(set)
                guard !sequences.isEmpty else { throw GrammarError.unsupported("an empty character class in rule '\(rule)'") }
                if sequences.allSatisfy({ $0.count == 1 }) {
                    var s = ByteSet()
                    for seq in sequences { for b in seq[0] { s.insert(b) } }
                    return [bytes(s)]
                }
                let body = sequences.map { seq in seq.map { bytes(ByteSet($0)) } }
                try grow(body.reduce(0) { $0 + $1.count + 1 })
                let id = try helper(body, for: rule)
                classRules[set] = id
                return [.rule(id)]
            case .reference(let name):
                guard let id = ids[name] else { throw GrammarError.undefinedRule(name) }
                return [.rule(id)]
            case .group(let alternatives):
                if alternatives.count == 1 { return try sequence(alternatives[0], in: rule) }
                let body = try alternatives.map { try sequence($0, in: rule) }
                return [.rule(try helper(body, for: rule))]
            case .repetition(let inner, let low, let high):
                var unit = try term(inner, in: rule)
                if unit.count > 1 { unit = [.rule(try helper([unit], for: rule))] }
                var out: [Element] = []
                for _ in 0..<low { out += unit }
                try grow(out.count)
                if let high {
                    // x{0,k} as (x (x (...)?)?)?: one way to match each count.
                    var tail: Element? = nil
                    for _ in 0..<(high - low) {
                        let body: [[Element]] = [unit + (tail.map { [$0] } ?? []), []]
                        try grow(unit.count + 3)
                        tail = .rule(try helper(body, for: rule))
                    }
                    if let tail { out.append(tail) }
                } else {
                    // x* as S ::= x S | (nothing).
                    let id = Int32(names.count)
                    try grow(unit.count + 3)
                    _ = try helper([unit + [.rule(id)], []], for: rule)
                    out.append(.rule(id))
                }
                return out
            }
        }
    }
}
