/// Writing GBNF text: the JSON Schema and regular-expression compilers produce grammar
/// text, so a user can see (and llama.cpp could run) exactly what constrains the output.
public enum GBNFText {
    /// A string literal matching `text` exactly.
    public static func literal(_ text: String) -> String {
        "\"" + text.unicodeScalars.map(escape).joined() + "\""
    }

    /// A character class matching exactly `set`.
    static func characters(_ set: CodePointSet) -> String {
        if set == .all { return "." }
        let complement = set.complement
        // The shorter of the two spellings.
        if complement.ranges.count < set.ranges.count, !complement.ranges.isEmpty {
            return "[^" + complement.ranges.map(range).joined() + "]"
        }
        return "[" + set.ranges.map(range).joined() + "]"
    }

    private static func range(_ r: ClosedRange<UInt32>) -> String {
        r.lowerBound == r.upperBound ? classEscape(r.lowerBound) : classEscape(r.lowerBound) + "-" + classEscape(r.upperBound)
    }

    private static func escape(_ s: Unicode.Scalar) -> String {
        switch s {
        case "\"": return "\\\""
        case "\\": return "\\\\"
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        default: return s.value < 0x20 || s.value == 0x7F ? hex(s.value) : String(s)
        }
    }

    private static func classEscape(_ c: UInt32) -> String {
        if let s = Unicode.Scalar(c), (s.properties.isAlphabetic || s.properties.numericType != nil) && c > 0x20 && c != 0x7F { return String(s) }
        return hex(c)
    }

    private static func hex(_ c: UInt32) -> String {
        let digits = String(c, radix: 16, uppercase: true)
        if c <= 0xFF { return "\\x" + String(repeating: "0", count: 2 - digits.count) + digits }
        if c <= 0xFFFF { return "\\u" + String(repeating: "0", count: 4 - digits.count) + digits }
        return "\\U" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}
