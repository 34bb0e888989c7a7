/// Why a grammar, schema or pattern cannot be used: each names what is wrong and where.
public enum GrammarError: Error, Equatable, CustomStringConvertible {
    case syntax(line: Int, column: Int, message: String)
    case undefinedRule(String)
    case missingRoot
    case leftRecursion(rule: String)
    case neverFinishes(rule: String)
    case tooLarge(String)
    case unsupported(String)
    case invalidSchema(String)

    public var description: String {
        switch self {
        case .syntax(let line, let column, let message): "grammar syntax error at line \(line), column \(column): \(message)"
        case .undefinedRule(let name): "grammar refers to rule '\(name)', which is not defined"
        case .missingRoot: "grammar has no 'root' rule"
        case .leftRecursion(let rule): "grammar rule '\(rule)' is left-recursive (it can reach itself without consuming a character); rewrite it with repetition"
        case .neverFinishes(let rule): "grammar rule '\(rule)' can never finish (every alternative refers to itself)"
        case .tooLarge(let what): "grammar too large: \(what)"
        case .unsupported(let what): "unsupported: \(what)"
        case .invalidSchema(let what): "invalid JSON schema: \(what)"
        }
    }
}

/// A set of Unicode code points as sorted, disjoint, non-adjacent ranges.
struct CodePointSet: Hashable {
    private(set) var ranges: [ClosedRange<UInt32>]

    static let maxCodePoint: UInt32 = 0x10FFFF
    static let all = CodePointSet([0...maxCodePoint])

    init(_ ranges: [ClosedRange<UInt32>]) {
        var merged: [ClosedRange<UInt32>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, r.lowerBound <= last.upperBound &+ 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        self.ranges = merged
    }

    var complement: CodePointSet {
        var out: [ClosedRange<UInt32>] = []
        var next: UInt32 = 0
        for r in ranges {
            if r.lowerBound > next { out.append(next...(r.lowerBound - 1)) }
            next = r.upperBound &+ 1
            if r.upperBound == Self.maxCodePoint { return CodePointSet(out) }
        }
        out.append(next...Self.maxCodePoint)
        return CodePointSet(out)
    }

    func contains(_ c: UInt32) -> Bool { ranges.contains { $0.contains(c) } }
}

/// A grammar as written, before compilation: named rules of alternatives of sequences.
struct GrammarSyntax {
    indirect enum Term: Equatable {
        /// Code points to match in order.
        case literal([UInt32])
        /// One code point from the set (`[...]`, `[^...]`, `.`).
        case characters(CodePointSet)
        case reference(String)
        case group([[Term]])
        case repetition(Term, min: Int, max: Int?)
    }

    var rules: [(name: String, alternatives: [[Term]])] = []
}

/// Parses llama.cpp's GBNF dialect: `name ::= alternatives`, string literals, character
/// classes (with ranges and `^`), `.`, groups, `* + ? {m} {m,} {m,n}`, `#` comments. A rule's
/// body ends at a newline outside parentheses, unless the next line goes on with `|`.
struct GBNFParser {
    private let text: [UInt8]
    private var i = 0
    private var nesting = 0
    static let maxRepetition = 10_000
    static let maxNesting = 200

    init(_ text: String) { self.text = Array(text.utf8) }

    static func parse(_ text: String) throws -> GrammarSyntax {
        var p = GBNFParser(text)
        return try p.grammar()
    }

    private mutating func grammar() throws -> GrammarSyntax {
        var g = GrammarSyntax()
        var seen: [String: Int] = [:]
        skipSpace(newlines: true)
        while i < text.count {
            let name = try ruleName()
            skipSpace(newlines: false)
            guard consume("::=") else { throw error("expected '::=' after rule name '\(name)'") }
            skipSpace(newlines: true)
            let body = try alternatives(nested: false)
            if let index = seen[name] {
                g.rules[index].alternatives += body
            } else {
                seen[name] = g.rules.count
                g.rules.append((name, body))
            }
            skipSpace(newlines: true)
        }
        return g
    }

    private mutating func alternatives(nested: Bool) throws -> [[GrammarSyntax.Term]] {
        var alts = [try sequence(nested: nested)]
        while true {
            let mark = i
            if !nested { skipSpace(newlines: true) }
            guard peek == UInt8(ascii: "|") else { i = mark; break }
            i += 1
            skipSpace(newlines: true)
            alts.append(try sequence(nested: nested))
        }
        return alts
    }

    private mutating func sequence(nested: Bool) throws -> [GrammarSyntax.Term] {
        var terms: [GrammarSyntax.Term] = []
        while let c = peek {
            if c == UInt8(ascii: "|") || c == UInt8(ascii: ")") || c == 0x0A || c == 0x0D { break }
            if !nested, isNameStart(c), startsRule() { break }
            var term: GrammarSyntax.Term
            switch c {
            case UInt8(ascii: "\""):
                i += 1
                var points: [UInt32] = []
                while true {
                    guard let d = peek else { throw error("unterminated string literal") }
                    if d == UInt8(ascii: "\"") { i += 1; break }
                    if d == 0x0A { throw error("newline inside a string literal") }
                    points.append(try character())
                }
                term = .literal(points)
            case UInt8(ascii: "["):
                i += 1
                var negated = false
                if peek == UInt8(ascii: "^") { negated = true; i += 1 }
                var ranges: [ClosedRange<UInt32>] = []
                while true {
                    guard let d = peek else { throw error("unterminated character class") }
                    if d == UInt8(ascii: "]") { i += 1; break }
                    let low = try character()
                    var high = low
                    if peek == UInt8(ascii: "-"), i + 1 < text.count, text[i + 1] != UInt8(ascii: "]") {
                        i += 1
                        high = try character()
                    }
                    guard low <= high else { throw error("character range is backwards") }
                    ranges.append(low...high)
                }
                let set = CodePointSet(ranges)
                term = .characters(negated ? set.complement : set)
            case UInt8(ascii: "."):
                i += 1
                term = .characters(.all)
            case UInt8(ascii: "("):
                i += 1
                nesting += 1
                defer { nesting -= 1 }
                guard nesting <= Self.maxNesting else { throw GrammarError.tooLarge("parentheses nested deeper than \(Self.maxNesting)") }
                skipSpace(newlines: true)
                let inner = try alternatives(nested: true)
                skipSpace(newlines: true)
                guard consume(")") else { throw error("expected ')'") }
                term = .group(inner)
            case UInt8(ascii: "<"):
                throw GrammarError.unsupported("token references (<...>) in grammars")
            default:
                guard isNameStart(c) else { throw error("unexpected character '\(Character(Unicode.Scalar(c)))'") }
                term = .reference(try ruleName())
            }
            // Postfix operators.
            while let op = peek {
                if op == UInt8(ascii: "*") { i += 1; term = .repetition(term, min: 0, max: nil) }
                else if op == UInt8(ascii: "+") { i += 1; term = .repetition(term, min: 1, max: nil) }
                else if op == UInt8(ascii: "?") { i += 1; term = .repetition(term, min: 0, max: 1) }
                else if op == UInt8(ascii: "{") {
                    i += 1
                    skipSpace(newlines: false)
                    let low = number() ?? 0
                    skipSpace(newlines: false)
                    var high: Int? = low
                    if consume(",") {
                        skipSpace(newlines: false)
                        high = number()
                        skipSpace(newlines: false)
                    }
                    guard consume("}") else { throw error("expected '}' to close a repetition") }
                    if let h = high, h < low { throw error("repetition {\(low),\(h)} has its maximum below its minimum") }
                    if max(low, high ?? 0) > Self.maxRepetition { throw GrammarError.tooLarge("a repetition count above \(Self.maxRepetition)") }
                    term = .repetition(term, min: low, max: high)
                } else { break }
            }
            terms.append(term)
            skipSpace(newlines: nested)
        }
        return terms
    }

    /// One character of a literal or class, with escapes.
    private mutating func character() throws -> UInt32 {
        guard let c = peek else { throw error("unexpected end of grammar") }
        if c == UInt8(ascii: "\\") {
            i += 1
            guard let e = peek else { throw error("unterminated escape") }
            i += 1
            switch e {
            case UInt8(ascii: "n"): return 0x0A
            case UInt8(ascii: "r"): return 0x0D
            case UInt8(ascii: "t"): return 0x09
            case UInt8(ascii: "x"): return try hex(2)
            case UInt8(ascii: "u"): return try hex(4)
            case UInt8(ascii: "U"): return try hex(8)
            case UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "-"), UInt8(ascii: "^"): return UInt32(e)
            default: throw error("unknown escape '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
        // A UTF-8 sequence: decode one scalar.
        let length = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4
        guard i + length <= text.count, let s = String(validating: text[i..<(i + length)], as: UTF8.self)?.unicodeScalars.first else {
            throw error("invalid UTF-8")
        }
        i += length
        return s.value
    }

    private mutating func hex(_ digits: Int) throws -> UInt32 {
        guard i + digits <= text.count, let v = UInt32(String(decoding: text[i..<(i + digits)], as: UTF8.self), radix: 16) else {
            throw error("expected \(digits) hexadecimal digits")
        }
        guard v <= CodePointSet.maxCodePoint else { throw error("code point above U+10FFFF") }
        guard !(0xD800...0xDFFF).contains(v) else { throw error("a surrogate code point (U+\(String(v, radix: 16, uppercase: true))) is not a character") }
        i += digits
        return v
    }

    private mutating func number() -> Int? {
        var v = 0, any = false
        while let c = peek, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") {
            v = min(v * 10 + Int(c - UInt8(ascii: "0")), Int(Int32.max))
            any = true
            i += 1
        }
        return any ? v : nil
    }

    private mutating func ruleName() throws -> String {
        let start = i
        while let c = peek, isNameStart(c) || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) { i += 1 }
        guard i > start else { throw error("expected a rule name") }
        return String(decoding: text[start..<i], as: UTF8.self)
    }

    /// Whether a rule definition (`name ::=`) starts here.
    private func startsRule() -> Bool {
        var j = i
        while j < text.count, isNameStart(text[j]) || (text[j] >= UInt8(ascii: "0") && text[j] <= UInt8(ascii: "9")) { j += 1 }
        while j < text.count, text[j] == 0x20 || text[j] == 0x09 { j += 1 }
        return j + 3 <= text.count && text[j] == UInt8(ascii: ":") && text[j + 1] == UInt8(ascii: ":") && text[j + 2] == UInt8(ascii: "=")
    }

    private func isNameStart(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
    }

    private mutating func skipSpace(newlines: Bool) {
        while let c = peek {
            if c == 0x20 || c == 0x09 || (newlines && (c == 0x0A || c == 0x0D)) { i += 1 }
            else if c == UInt8(ascii: "#") { while let d = peek, d != 0x0A { i += 1 } }
            else { break }
        }
    }

    private var peek: UInt8? { i < text.count ? text[i] : nil }

    private mutating func consume(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard i + u.count <= text.count, Array(text[i..<(i + u.count)]) == u else { return false }
        i += u.count
        return true
    }

    private func error(_ message: String) -> GrammarError {
        var line = 1, column = 1
        for c in text[..<min(i, text.count)] {
            if c == 0x0A { line += 1; column = 1 } else { column += 1 }
        }
        return .syntax(line: line, column: column, message: message)
    }
}
