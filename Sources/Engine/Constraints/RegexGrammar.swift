/// Regular expressions (the subset JSON Schema's `pattern` and vLLM's `guided_regex` see in
/// practice: literals, classes with ranges and `\d \w \s`, `.`, groups, alternation and
/// every quantifier) as a GBNF expression. A pattern is matched whole; `^` and `$` are
/// accepted at its ends. Backreferences, lookaround and word boundaries have no grammar
/// and are refused by name.
struct RegexGrammar {
    private let pattern: [Unicode.Scalar]
    private var i = 0
    private var nesting = 0
    /// Inside a JSON string, `"`, `\` and control characters must be written escaped.
    private let jsonString: Bool
    static let maxLength = 10_000

    static func gbnf(_ pattern: String, insideJSONString: Bool = false) throws -> String {
        guard pattern.unicodeScalars.count <= maxLength else { throw GrammarError.tooLarge("a regular expression longer than \(maxLength) characters") }
        var r = RegexGrammar(pattern: Array(pattern.unicodeScalars), jsonString: insideJSONString)
        if r.peek == "^" { r.i += 1 }
        let body = try r.alternation()
        guard r.i == r.pattern.count else { throw r.error("unbalanced ')'") }
        return body
    }

    private init(pattern: [Unicode.Scalar], jsonString: Bool) {
        self.pattern = pattern
        self.jsonString = jsonString
    }

    private var peek: Unicode.Scalar? { i < pattern.count ? pattern[i] : nil }

    private func error(_ message: String) -> GrammarError {
        .invalidSchema("regular expression at offset \(i): \(message)")
    }

    private mutating func alternation() throws -> String {
        var alts = [try concatenation()]
        while peek == "|" {
            i += 1
            alts.append(try concatenation())
        }
        return alts.count == 1 ? alts[0] : "(" + alts.joined(separator: " | ") + ")"
    }

    private mutating func concatenation() throws -> String {
        var parts: [String] = []
        while let c = peek, c != "|", c != ")" {
            if c == "$" && i == pattern.count - 1 { i += 1; break }
            var atom = try self.atom()
            // Quantifiers (a lazy or possessive suffix changes nothing for a grammar).
            while let q = peek, "*+?{".unicodeScalars.contains(q) {
                if q == "{" {
                    guard let (low, high) = try repetition() else { break }
                    atom = "(" + atom + ")" + (high == low ? "{\(low)}" : high.map { "{\(low),\($0)}" } ?? "{\(low),}")
                } else {
                    i += 1
                    atom = "(" + atom + ")" + String(q)
                }
                if let s = peek, s == "?" || s == "+" { i += 1 }
            }
            parts.append(atom)
        }
        return parts.isEmpty ? "\"\"" : parts.joined(separator: " ")
    }

    /// `{m}`, `{m,}`, `{m,n}`; nil (and nothing consumed) when the brace is a literal.
    private mutating func repetition() throws -> (Int, Int?)? {
        let start = i
        i += 1
        func number() -> Int? {
            var v = 0, any = false
            while let c = peek, let d = c.properties.numericType != nil ? Int(String(c)) : nil { v = min(v * 10 + d, 1 << 30); any = true; i += 1 }
            return any ? v : nil
        }
        guard let low = number() else { i = start; return nil }
        var high: Int? = low
        if peek == "," { i += 1; high = number() }
        guard peek == "}" else { i = start; return nil }
        i += 1
        if let h = high, h < low { throw error("repetition {\(low),\(h)} has its maximum below its minimum") }
        if max(low, high ?? 0) > GBNFParser.maxRepetition { throw GrammarError.tooLarge("a repetition count above \(GBNFParser.maxRepetition)") }
        return (low, high)
    }

    private mutating func atom() throws -> String {
        let c = pattern[i]
        i += 1
        switch c {
        case "(":
            nesting += 1
            defer { nesting -= 1 }
            guard nesting <= GBNFParser.maxNesting else { throw GrammarError.tooLarge("groups nested deeper than \(GBNFParser.maxNesting)") }
            if peek == "?" {
                i += 1
                switch peek {
                case ":": i += 1
                case "<" where i + 1 < pattern.count && pattern[i + 1] != "=" && pattern[i + 1] != "!":
                    while let d = peek, d != ">" { i += 1 }
                    i += 1
                case "P" where i + 1 < pattern.count && pattern[i + 1] == "<":
                    while let d = peek, d != ">" { i += 1 }
                    i += 1
                default: throw GrammarError.unsupported("lookaround and inline flags ('(?') in regular expressions")
                }
            }
            let inner = try alternation()
            guard peek == ")" else { throw error("missing ')'") }
            i += 1
            return "(" + inner + ")"
        case "[": return try characterClass()
        case ".": return characters(CodePointSet([0x0A...0x0A]).complement)
        case "\\": return try escape()
        case "^": throw GrammarError.unsupported("'^' inside a regular expression (only at its start)")
        case "$": throw GrammarError.unsupported("'$' inside a regular expression (only at its end)")
        case "*", "+", "?": throw error("nothing to repeat")
        default: return literal(c.value)
        }
    }

    private mutating func escape() throws -> String {
        guard let e = peek else { throw error("trailing backslash") }
        i += 1
        if let set = Self.shorthand(e) { return characters(set) }
        switch e {
        case "b", "B": throw GrammarError.unsupported("word boundaries ('\\\(e)') in regular expressions")
        case "1"..."9": throw GrammarError.unsupported("backreferences ('\\\(e)') in regular expressions")
        default: return literal(try escapedCharacter(e))
        }
    }

    private mutating func escapedCharacter(_ e: Unicode.Scalar) throws -> UInt32 {
        switch e {
        case "n": return 0x0A
        case "r": return 0x0D
        case "t": return 0x09
        case "f": return 0x0C
        case "v": return 0x0B
        case "0": return 0
        case "x", "u":
            let digits = e == "x" ? 2 : 4
            guard i + digits <= pattern.count, let v = UInt32(String(String.UnicodeScalarView(pattern[i..<(i + digits)])), radix: 16) else {
                throw error("expected \(digits) hexadecimal digits after '\\\(e)'")
            }
            i += digits
            return v
        default:
            if e.properties.isAlphabetic || e.properties.numericType != nil { throw GrammarError.unsupported("the escape '\\\(e)' in regular expressions") }
            return e.value
        }
    }

    private static func shorthand(_ e: Unicode.Scalar) -> CodePointSet? {
        let digit = CodePointSet([0x30...0x39])
        let word = CodePointSet([0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A])
        let space = CodePointSet([0x09...0x0D, 0x20...0x20])
        switch e {
        case "d": return digit
        case "D": return digit.complement
        case "w": return word
        case "W": return word.complement
        case "s": return space
        case "S": return space.complement
        default: return nil
        }
    }

    private mutating func characterClass() throws -> String {
        var negated = false
        if peek == "^" { negated = true; i += 1 }
        var ranges: [ClosedRange<UInt32>] = []
        var first = true
        while true {
            guard let c = peek else { throw error("missing ']'") }
            if c == "]" && !first { i += 1; break }
            first = false
            i += 1
            var low: UInt32
            if c == "\\" {
                guard let e = peek else { throw error("trailing backslash") }
                i += 1
                if let set = Self.shorthand(e) { ranges += set.ranges; continue }
                low = e == "b" ? 0x08 : try escapedCharacter(e)
            } else {
                low = c.value
            }
            var high = low
            if peek == "-", i + 1 < pattern.count, pattern[i + 1] != "]" {
                i += 1
                let d = pattern[i]
                i += 1
                if d == "\\" {
                    guard let e = peek else { throw error("trailing backslash") }
                    i += 1
                    high = try escapedCharacter(e)
                } else {
                    high = d.value
                }
            }
            guard low <= high else { throw error("character range is backwards") }
            ranges.append(low...high)
        }
        let set = CodePointSet(ranges)
        return characters(negated ? set.complement : set)
    }

    private func literal(_ c: UInt32) -> String {
        guard jsonString, let escaped = Self.jsonEscape(c) else { return GBNFText.literal(String(Unicode.Scalar(c).map(Character.init) ?? "?")) }
        return GBNFText.literal(escaped)
    }

    /// A class; inside a JSON string the characters that must be escaped appear as their
    /// escapes (and control characters other than the common ones not at all).
    private func characters(_ set: CodePointSet) -> String {
        guard jsonString else { return GBNFText.characters(set) }
        let unsafe = CodePointSet([0...0x1F, 0x22...0x22, 0x5C...0x5C])
        let safe = CodePointSet(set.ranges.flatMap { r in Self.subtract(r, unsafe) })
        var alts: [String] = safe.ranges.isEmpty ? [] : [GBNFText.characters(safe)]
        for c: UInt32 in [0x22, 0x5C, 0x0A, 0x09] where set.contains(c) { alts.append(GBNFText.literal(Self.jsonEscape(c)!)) }
        guard !alts.isEmpty else { return "[^\\x00-\\U0010FFFF]" }
        return alts.count == 1 ? alts[0] : "(" + alts.joined(separator: " | ") + ")"
    }

    private static func subtract(_ r: ClosedRange<UInt32>, _ s: CodePointSet) -> [ClosedRange<UInt32>] {
        var out: [ClosedRange<UInt32>] = []
        var low = r.lowerBound
        for x in s.ranges where x.upperBound >= low && x.lowerBound <= r.upperBound {
            if x.lowerBound > low { out.append(low...(x.lowerBound - 1)) }
            low = x.upperBound + 1
            if low > r.upperBound { return out }
        }
        if low <= r.upperBound { out.append(low...r.upperBound) }
        return out
    }

    static func jsonEscape(_ c: UInt32) -> String? {
        switch c {
        case 0x22: return "\\\""
        case 0x5C: return "\\\\"
        case 0x0A: return "\\n"
        case 0x09: return "\\t"
        case 0x0D: return "\\r"
        case 0..<0x20:
            let h = String(c, radix: 16)
            return "\\u" + String(repeating: "0", count: 4 - h.count) + h
        default: return nil
        }
    }
}
