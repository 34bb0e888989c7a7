import GGUF

/// SentencePiece segmentation (Kudo & Richardson 2018) as llama.cpp runs it for
/// `tokenizer.ggml.model = "llama"` (`llm_tokenizer_spm_session`): spaces become `▁`
/// (U+2581), the text starts as one symbol per UTF-8 character, and the adjacent pair whose
/// concatenation is a vocabulary token with the highest score merges (the leftmost on a
/// tie) until no adjacent pair is a token. A final symbol outside the vocabulary becomes
/// its bytes' `<0xNN>` tokens.
///
/// There is no pre-tokenizer: a whole fragment between special tokens is one merge run, so
/// the pairs wait in a priority queue and each merge only adds the two pairs it creates;
/// the cost is O(n log n) in the fragment's characters, not a rescan per merge.
struct SentencePiece: SubwordModel {
    let vocabulary: Vocabulary
    /// `tokenizer.ggml.add_space_prefix` (llama.cpp's default for SentencePiece is true):
    /// a `▁` goes before the text and after every special token, and decoding drops the
    /// space it becomes at the very start.
    let addSpacePrefix: Bool
    /// For each byte, the id of `<0xNN>`, else of the one-byte token, else -1 (the order
    /// of llama.cpp's `byte_to_token`).
    let byteTokens: [Int32]

    static let escapedSpace: [UInt8] = Array("\u{2581}".utf8)

    init(vocabulary: Vocabulary, metadata m: GGUFMetadata) throws {
        self.vocabulary = vocabulary
        addSpacePrefix = try m.optionalBool("tokenizer.ggml.add_space_prefix") ?? true
        let hex = Array("0123456789ABCDEF".utf8)
        byteTokens = (0..<256).map { b in
            let name = String(decoding: Array("<0x".utf8) + [hex[b >> 4], hex[b & 15], UInt8(ascii: ">")], as: UTF8.self)
            if let id = vocabulary.id(of: name) { return Int32(id) }
            let raw = [UInt8(b)]
            return raw.withUnsafeBufferPointer { vocabulary.pieces.id(of: $0) }.map(Int32.init) ?? -1
        }
    }

    var stripsLeadingSpace: Bool { addSpacePrefix }

    func encode(_ text: String, afterSpecial: Bool, into out: inout [Int]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + 3)
        if addSpacePrefix, afterSpecial { bytes += Self.escapedSpace }
        for b in text.utf8 {
            if b == 0x20 { bytes += Self.escapedSpace } else { bytes.append(b) }
        }
        bytes.withUnsafeBufferPointer { encode($0, into: &out) }
    }

    /// A candidate merge of symbols `left` and `right`, whose texts together are `size` bytes.
    struct Pair: Comparable {
        let score: Float, left: Int32, right: Int32, size: Int32
        /// "Comes out of the queue first": the higher score, then the leftmost.
        static func < (a: Pair, b: Pair) -> Bool { b.score < a.score || (b.score == a.score && a.left < b.left) }
    }

    private func encode(_ text: UnsafeBufferPointer<UInt8>, into out: inout [Int]) {
        guard !text.isEmpty else { return }
        // Symbols: byte offset and length in `text`, and a doubly linked list of live ones.
        // A merged-away symbol has length 0. Characters are split by their lead byte alone,
        // as llama.cpp's `unicode_len_utf8` does.
        var start: [Int32] = [], length: [Int32] = []
        var offset = 0
        while offset < text.count {
            let lead = text[offset]
            let n = lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
            start.append(Int32(offset))
            length.append(Int32(min(n, text.count - offset)))
            offset += n
        }
        let count = start.count
        var next = (0..<count).map { Int32($0 + 1 == count ? -1 : $0 + 1) }
        var prev = (0..<count).map { Int32($0 - 1) }

        var queue = MinHeap<Pair>()
        func consider(_ left: Int32, _ right: Int32) {
            guard left >= 0, right >= 0 else { return }
            let size = Int(length[Int(left)] + length[Int(right)])
            let piece = UnsafeBufferPointer(rebasing: text[Int(start[Int(left)])..<(Int(start[Int(left)]) + size)])
            guard let id = vocabulary.pieces.id(of: piece) else { return }
            queue.push(Pair(score: vocabulary.scores[id], left: left, right: right, size: Int32(size)))
        }
        for i in 1..<count { consider(Int32(i - 1), Int32(i)) }

        while let pair = queue.pop() {
            let l = Int(pair.left), r = Int(pair.right)
            // Stale: one side was merged since this pair was queued (lengths only grow, so
            // an unchanged total means both sides are as they were).
            guard length[l] != 0, length[r] != 0, length[l] + length[r] == pair.size else { continue }
            length[l] += length[r]
            length[r] = 0
            next[l] = next[r]
            if next[r] >= 0 { prev[Int(next[r])] = pair.left }
            consider(prev[l], pair.left)
            consider(pair.left, next[l])
        }

        var i: Int32 = 0
        while i >= 0 {
            let piece = UnsafeBufferPointer(rebasing: text[Int(start[Int(i)])..<Int(start[Int(i)] + length[Int(i)])])
            if let id = vocabulary.pieces.id(of: piece) {
                out.append(id)
            } else {
                // Only a single character can be missing (every merge made a token).
                for b in piece {
                    let id = byteTokens[Int(b)]
                    if id >= 0 { out.append(Int(id)) } else if let unk = vocabulary.unknown { out.append(unk) }
                }
            }
            i = next[Int(i)]
        }
    }

    /// `▁` back to a space.
    func bytes(ofPiece text: String) -> [UInt8] {
        let utf8 = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        var i = 0
        while i < utf8.count {
            if utf8[i] == 0xE2, i + 2 < utf8.count, utf8[i + 1] == 0x96, utf8[i + 2] == 0x81 {
                out.append(0x20)
                i += 3
            } else {
                out.append(utf8[i])
                i += 1
            }
        }
        return out
    }
}
