/// One stage of the sampler's chain: it adjusts the logits of the next position before
/// the filters (top-k, top-p, min-p) and the draw. A processor that keeps state about the
/// output (a grammar's position) hears of every token the sequence keeps through `accept`
/// and of tokens taken back through `rollback`; a copy (a struct's) is an independent
/// processor, which is how the samples of `n > 1` get their own.
public protocol LogitsProcessor {
    /// Adjusts `logits` for the position after `history` (prompt and output so far).
    mutating func process(_ logits: inout [Float], history: [Int])
    /// The sequence kept `token`.
    mutating func accept(_ token: Int)
    /// The last `count` accepted tokens were taken back.
    mutating func rollback(_ count: Int)
    /// Why the processor can no longer do its job (a grammar's automaton hit a limit); the
    /// request then fails with it rather than go on unconstrained.
    var failure: (any Error)? { get }
}

extension LogitsProcessor {
    public mutating func accept(_ token: Int) {}
    public mutating func rollback(_ count: Int) {}
    public var failure: (any Error)? { nil }
}

/// OpenAI's `logit_bias`: added to the logits of the given tokens before anything else.
struct LogitBias: LogitsProcessor {
    let bias: [Int: Float]

    func process(_ logits: inout [Float], history: [Int]) {
        for (token, b) in bias where token < logits.count { logits[token] += b }
    }
}

/// The repetition penalty (divide positive, multiply negative logits of recently seen
/// tokens) and OpenAI's presence and frequency penalties, over the last `window` tokens.
struct RepetitionPenalties: LogitsProcessor {
    let repetition: Float
    let presence: Float
    let frequency: Float
    let window: Int

    func process(_ logits: inout [Float], history: [Int]) {
        var counts: [Int: Int] = [:]
        for t in history.suffix(window) where t >= 0 && t < logits.count { counts[t, default: 0] += 1 }
        for (t, n) in counts {
            if repetition != 1 {
                logits[t] = logits[t] > 0 ? logits[t] / repetition : logits[t] * repetition
            }
            logits[t] -= Float(n) * frequency + presence
        }
    }
}
