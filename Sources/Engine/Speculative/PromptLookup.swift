import Tokenizer

/// Prompt lookup decoding (Saxena 2023; llama.cpp's `ngram-simple`, vLLM's `[ngram]`): the
/// last few tokens of a sequence are looked up earlier in the same sequence, prompt and
/// output alike, and what followed them there is the draft. Edits, code, summaries and
/// chat with quoted context repeat long runs of their input, which this finds for the price
/// of a scan: no model, no memory. Once a sequence copies a long run, `CopyTrack` follows the
/// copy through its edits and drafts it with the renames it has made so far.
final class PromptLookup: Proposer {
    /// Longest and shortest suffix looked up; the longest that occurs wins.
    let maxMatch: Int
    let minMatch: Int
    /// Continuations drafted at most: the chain, and `width - 1` branches off it.
    let width: Int

    /// The text of tokens, for the renames a copy makes (`CopyTrack`).
    let tokenizer: Tokenizer

    init(tokenizer: Tokenizer, maxMatch: Int = 8, minMatch: Int = 2, width: Int = 1) {
        precondition(minMatch >= 1 && maxMatch >= minMatch && width >= 1)
        self.tokenizer = tokenizer
        self.maxMatch = maxMatch
        self.minMatch = minMatch
        self.width = width
    }

    /// The copy each sequence follows, while it follows one.
    private var tracks: [ObjectIdentifier: CopyTrack] = [:]

    /// The copy's continuation where a sequence follows an established copy, otherwise the
    /// lookup's.
    func propose(_ requests: [(sequence: Sequence, limit: Int)]) -> [Draft] {
        requests.map { request in
            let s = request.sequence
            // Out of the dictionary while it changes, so that its arrays are not copied.
            var track = tracks.removeValue(forKey: ObjectIdentifier(s))
                ?? CopyTrack(tokenizer: tokenizer, promptCount: s.promptCount, maxMatch: maxMatch, minMatch: minMatch)
            let copied = s.tokens.withUnsafeBufferPointer { t in
                track.follow(t)
                return track.draft(t, limit: request.limit)
            }
            tracks[ObjectIdentifier(s)] = track
            if !copied.isEmpty { return Draft(tokens: copied) }
            return Self.lookup(s.tokens, maxMatch: maxMatch, minMatch: minMatch, limit: request.limit, width: width)
        }
    }

    func prepare(_ sequences: [Sequence]) {}

    func release(_ sequence: Sequence) { tracks[ObjectIdentifier(sequence)] = nil }

    /// The chain is what followed the most recent earlier occurrence of the longest suffix of
    /// `tokens` (between `minMatch` and `maxMatch` tokens) that occurs earlier, up to `limit`
    /// tokens. Branches come from the next occurrences in the same order (longest suffix,
    /// then most recent): each that leaves the chain, at a place and with a token no branch
    /// has yet, up to `width - 1` of them, each up to `limit` tokens.
    static func lookup(_ tokens: [Int], maxMatch: Int, minMatch: Int, limit: Int, width: Int = 1) -> Draft {
        let count = tokens.count
        guard limit > 0, count > minMatch else { return Draft() }
        return tokens.withUnsafeBufferPointer { t -> Draft in
            var draft = Draft()
            search: for n in stride(from: min(maxMatch, count - 1), through: minMatch, by: -1) {
                // Occurrences ending at `end` (exclusive), latest first; the suffix itself ends at `count`.
                var end = count - 1
                while end >= n {
                    defer { end -= 1 }
                    guard t[end - 1] == t[count - 1] else { continue }
                    var i = 1
                    while i < n && t[end - 1 - i] == t[count - 1 - i] { i += 1 }
                    guard i == n else { continue }
                    let continuation = t[end..<min(end + limit, count)]
                    if draft.tokens.isEmpty {
                        draft.tokens = Array(continuation)
                    } else {
                        var after = 0
                        while after < draft.tokens.count, after < continuation.count,
                              draft.tokens[after] == continuation[continuation.startIndex + after] { after += 1 }
                        guard after < continuation.count else { continue }
                        let first = continuation[continuation.startIndex + after]
                        guard !draft.branches.contains(where: { $0.after == after && $0.tokens[0] == first }) else { continue }
                        draft.branches.append(Draft.Branch(after: after, tokens: Array(continuation.dropFirst(after))))
                    }
                    if draft.branches.count == width - 1 { break search }
                }
            }
            return draft
        }
    }
}
