/// Prompt lookup decoding (Saxena 2023; llama.cpp's `ngram-simple`, vLLM's `[ngram]`): the
/// last few tokens of a sequence are looked up earlier in the same sequence, prompt and
/// output alike, and what followed them there is the draft. Edits, code, summaries and
/// chat with quoted context repeat long runs of their input, which this finds for the price
/// of a scan: no model, no memory.
final class PromptLookup: Proposer {
    /// Longest and shortest suffix looked up; the longest that occurs wins.
    let maxMatch: Int
    let minMatch: Int

    init(maxMatch: Int = 8, minMatch: Int = 2) {
        precondition(minMatch >= 1 && maxMatch >= minMatch)
        self.maxMatch = maxMatch
        self.minMatch = minMatch
    }

    func propose(_ requests: [(sequence: Sequence, limit: Int)]) -> [Draft] {
        requests.map { Draft(tokens: Self.lookup($0.sequence.tokens, maxMatch: maxMatch, minMatch: minMatch, limit: $0.limit)) }
    }

    func prepare(_ sequences: [Sequence]) {}

    func release(_ sequence: Sequence) {}

    /// What followed the most recent earlier occurrence of the longest suffix of `tokens`
    /// (between `minMatch` and `maxMatch` tokens) that occurs earlier, up to `limit` tokens.
    static func lookup(_ tokens: [Int], maxMatch: Int, minMatch: Int, limit: Int) -> [Int] {
        let count = tokens.count
        guard limit > 0, count > minMatch else { return [] }
        return tokens.withUnsafeBufferPointer { t -> [Int] in
            for n in stride(from: min(maxMatch, count - 1), through: minMatch, by: -1) {
                // Occurrences ending at `end` (exclusive), latest first; the suffix itself ends at `count`.
                var end = count - 1
                while end >= n {
                    if t[end - 1] == t[count - 1] {
                        var i = 1
                        while i < n && t[end - 1 - i] == t[count - 1 - i] { i += 1 }
                        if i == n { return Array(t[end..<min(end + limit, count)]) }
                    }
                    end -= 1
                }
            }
            return []
        }
    }
}
