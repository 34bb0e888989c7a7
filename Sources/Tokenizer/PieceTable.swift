/// Token texts to token ids, compared byte for byte, as llama.cpp's `token_to_id` map
/// compares `std::string`s.
///
/// A `[String: Int]` would be wrong here: Swift compares strings by canonical equivalence,
/// and Gemma 3's vocabulary holds 434 pairs of tokens whose bytes differ but which are
/// canonically equivalent (precomposed `▁là` and decomposed `▁la` + U+0300, Bengali
/// `য়` as one code point or two). Open addressing over one byte buffer also builds in a few
/// milliseconds for a 262,144-token vocabulary and looks a byte slice up without making a
/// `String`.
struct PieceTable: Sendable {
    /// Every token's UTF-8, concatenated; token `i` is `bytes[starts[i]..<starts[i + 1]]`.
    private let bytes: [UInt8]
    private let starts: [Int32]
    /// Token ids by hash, -1 where empty; the count is a power of two at least twice the
    /// number of tokens, so probes stay short.
    private let slots: [Int32]

    /// A token text that is already in the table, with both ids.
    struct Duplicate: Error {
        let first: Int, second: Int
    }

    /// Empty texts are left out (nothing looks them up).
    init(_ texts: [String]) throws {
        var bytes: [UInt8] = []
        var starts: [Int32] = [0]
        starts.reserveCapacity(texts.count + 1)
        for t in texts {
            bytes.append(contentsOf: t.utf8)
            starts.append(Int32(bytes.count))
        }
        var capacity = 16
        while capacity < 2 * texts.count { capacity <<= 1 }
        var slots = [Int32](repeating: -1, count: capacity)
        let mask = capacity - 1
        try bytes.withUnsafeBufferPointer { all in
            for id in texts.indices where starts[id + 1] > starts[id] {
                let text = UnsafeBufferPointer(rebasing: all[Int(starts[id])..<Int(starts[id + 1])])
                var slot = Int(truncatingIfNeeded: Self.hash(text)) & mask
                while slots[slot] >= 0 {
                    let other = Int(slots[slot])
                    if Self.equal(text, UnsafeBufferPointer(rebasing: all[Int(starts[other])..<Int(starts[other + 1])])) {
                        throw Duplicate(first: other, second: id)
                    }
                    slot = (slot + 1) & mask
                }
                slots[slot] = Int32(id)
            }
        }
        self.bytes = bytes
        self.starts = starts
        self.slots = slots
    }

    /// The id of the token whose text is exactly `text`, or nil.
    func id(of text: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !text.isEmpty else { return nil }
        let mask = slots.count - 1
        var slot = Int(truncatingIfNeeded: Self.hash(text)) & mask
        return bytes.withUnsafeBufferPointer { all in
            while true {
                let id = Int(slots[slot])
                if id < 0 { return nil }
                if Self.equal(text, UnsafeBufferPointer(rebasing: all[Int(starts[id])..<Int(starts[id + 1])])) { return id }
                slot = (slot + 1) & mask
            }
        }
    }

    func id(of text: String) -> Int? {
        var text = text
        return text.withUTF8 { id(of: $0) }
    }

    /// FNV-1a (64-bit): short keys, no per-process seed needed.
    @inline(__always) private static func hash(_ s: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return h
    }

    @inline(__always) private static func equal(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where a[i] != b[i] { return false }
        return true
    }
}
