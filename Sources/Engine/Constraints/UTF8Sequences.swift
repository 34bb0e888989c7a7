/// A set of bytes, as a 256-bit map.
struct ByteSet: Hashable {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    init() {}
    init(_ range: ClosedRange<UInt8>) { for b in range { insert(b) } }

    mutating func insert(_ b: UInt8) {
        let bit = UInt64(1) << UInt64(b & 63)
        switch b >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    @inline(__always) func contains(_ b: UInt8) -> Bool {
        let w: UInt64
        switch b >> 6 {
        case 0: w = words.0
        case 1: w = words.1
        case 2: w = words.2
        default: w = words.3
        }
        return w & (UInt64(1) << UInt64(b & 63)) != 0
    }

    /// The smallest byte in the set, preferring printable ASCII (for shortest completions
    /// that read well).
    var representative: UInt8? {
        for b in UInt8(0x20)...0x7E where contains(b) { return b }
        for b in UInt8(0)...255 where contains(b) { return b }
        return nil
    }

    static func == (a: ByteSet, b: ByteSet) -> Bool { a.words == b.words }
    func hash(into h: inout Hasher) { h.combine(words.0); h.combine(words.1); h.combine(words.2); h.combine(words.3) }
}

/// UTF-8 encodings of a set of code points as sequences of byte ranges, so that a grammar
/// over code points becomes an automaton over bytes (the construction of RE2 and Rust's
/// `regex-syntax`): a range of code points whose encodings share a length splits until each
/// piece is a product of byte ranges. Surrogates (U+D800–U+DFFF) have no encoding.
enum UTF8Sequences {
    static func of(_ set: CodePointSet) -> [[ClosedRange<UInt8>]] {
        var out: [[ClosedRange<UInt8>]] = []
        for r in set.ranges {
            for piece in removingSurrogates(r) { split(piece.lowerBound, piece.upperBound, into: &out) }
        }
        return out
    }

    private static func removingSurrogates(_ r: ClosedRange<UInt32>) -> [ClosedRange<UInt32>] {
        var out: [ClosedRange<UInt32>] = []
        if r.lowerBound < 0xD800 { out.append(r.lowerBound...min(r.upperBound, 0xD7FF)) }
        if r.upperBound > 0xDFFF { out.append(max(r.lowerBound, 0xE000)...r.upperBound) }
        return out
    }

    private static func split(_ lo: UInt32, _ hi: UInt32, into out: inout [[ClosedRange<UInt8>]]) {
        // Different encoded lengths: split at the boundary.
        for boundary: UInt32 in [0x7F, 0x7FF, 0xFFFF] where lo <= boundary && hi > boundary {
            split(lo, boundary, into: &out)
            split(boundary + 1, hi, into: &out)
            return
        }
        if hi < 0x80 {
            out.append([UInt8(lo)...UInt8(hi)])
            return
        }
        let n = length(lo)
        // Split until every continuation position spans whole 6-bit blocks or one value.
        for k in 1..<n {
            let m: UInt32 = (1 << (6 * UInt32(k))) - 1
            if lo & ~m != hi & ~m {
                if lo & m != 0 {
                    split(lo, lo | m, into: &out)
                    split((lo | m) + 1, hi, into: &out)
                    return
                }
                if hi & m != m {
                    split(lo, (hi & ~m) - 1, into: &out)
                    split(hi & ~m, hi, into: &out)
                    return
                }
            }
        }
        let a = encode(lo), b = encode(hi)
        out.append(zip(a, b).map { $0...$1 })
    }

    private static func length(_ c: UInt32) -> Int { c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4 }

    static func encode(_ c: UInt32) -> [UInt8] {
        Array(String(Character(Unicode.Scalar(c)!)).utf8)
    }
}
