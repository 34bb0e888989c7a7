import Tokenizer

/// The vocabulary as a trie of token bytes, laid out in pre-order: node i's subtree is
/// `i ..< subtreeEnd[i]`, so a walk that finds a prefix impossible skips every token under
/// it in one jump. Built once per tokenizer; control tokens (no bytes) are not in it unless
/// shown as their text, and end-of-generation tokens are handled apart (allowed exactly
/// where a grammar may end).
public final class TokenTrie: Sendable {
    let byte: [UInt8]
    let depth: [UInt16]
    let subtreeEnd: [Int32]
    /// Tokens ending at node i: `tokens[tokenStart[i] ..< tokenStart[i + 1]]`.
    let tokenStart: [Int32]
    let tokens: [Int32]
    let tokenBytes: [[UInt8]]
    let endOfGeneration: [Int]
    let vocabularySize: Int
    let maxDepth: Int
    /// The token of each single byte, where the vocabulary has one.
    let byteTokens: [Int?]
    let tokenizer: Tokenizer

    /// `shownControlTokens`: control tokens the output shows as their text, so the grammar
    /// may spell its text with them.
    public init(tokenizer: Tokenizer, shownControlTokens: Set<Int> = []) {
        self.tokenizer = tokenizer
        let n = tokenizer.vocabulary.count
        vocabularySize = n
        let bytes = (0..<n).map { tokenizer.bytes(of: $0, renderSpecial: shownControlTokens.contains($0)) }
        tokenBytes = bytes
        endOfGeneration = tokenizer.vocabulary.endOfGeneration.sorted()
        var single = [Int?](repeating: nil, count: 256)
        for id in (0..<n).reversed() where bytes[id].count == 1 && !tokenizer.isEndOfGeneration(id) { single[Int(bytes[id][0])] = id }
        byteTokens = single
        var entries: [Int32] = (0..<n).filter { !bytes[$0].isEmpty && !tokenizer.isEndOfGeneration($0) }.map { Int32($0) }
        entries.sort { a, b in
            let x = bytes[Int(a)], y = bytes[Int(b)]
            return x != y ? x.lexicographicallyPrecedes(y) : a < b
        }
        var byte: [UInt8] = [], depth: [UInt16] = [], subtreeEnd: [Int32] = [], tokenStart: [Int32] = [], tokens: [Int32] = []
        var path: [Int32] = []
        var previous: [UInt8] = []
        for id in entries {
            let b = bytes[Int(id)]
            var common = 0
            while common < min(b.count, previous.count), b[common] == previous[common] { common += 1 }
            while path.count > common { subtreeEnd[Int(path.removeLast())] = Int32(byte.count) }
            for k in path.count..<b.count {
                path.append(Int32(byte.count))
                byte.append(b[k])
                depth.append(UInt16(min(k + 1, Int(UInt16.max))))
                subtreeEnd.append(0)
                tokenStart.append(Int32(tokens.count))
            }
            tokens.append(id)
            previous = b
        }
        while let last = path.popLast() { subtreeEnd[Int(last)] = Int32(byte.count) }
        tokenStart.append(Int32(tokens.count))
        self.byte = byte
        self.depth = depth
        self.subtreeEnd = subtreeEnd
        self.tokenStart = tokenStart
        self.tokens = tokens
        maxDepth = Int(depth.max() ?? 0)
    }

    var nodeCount: Int { byte.count }

    /// Tokens that spell exactly `bytes`: the tokenizer's own tokenization when it spells
    /// them back (SentencePiece may add a space), else one token per byte; nil when some
    /// byte has no token.
    func spelling(_ bytes: [UInt8]) -> [Int]? {
        if bytes.isEmpty { return [] }
        let ids = tokenizer.encode(String(decoding: bytes, as: UTF8.self), addSpecial: false)
        if ids.flatMap({ tokenBytes[$0] }) == bytes { return ids }
        var out: [Int] = []
        for b in bytes {
            guard let t = byteTokens[Int(b)] else { return nil }
            out.append(t)
        }
        return out
    }
}
