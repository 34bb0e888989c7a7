/// Drafts the tokens a sequence is likely to continue with, for the target model to verify
/// in one pass (the seam every kind of drafting sits behind: prompt lookup, a draft model).
protocol Proposer: AnyObject {
    /// Drafts for each sequence up to its limit (a limit of 0 asks for nothing). A draft
    /// may be shorter than its limit, or empty.
    func propose(_ requests: [(sequence: Sequence, limit: Int)]) throws -> [Draft]
    /// Sequences whose prompts the target computes in this step: a proposer with state of
    /// its own (a draft model's KV) catches up on them now, as part of the prompt's time.
    func prepare(_ sequences: [Sequence]) throws
    /// Forgets whatever the proposer keeps for a sequence that has left the engine.
    func release(_ sequence: Sequence)
}

/// Tokens drafted to follow a sequence's tokens.
struct Draft {
    var tokens: [Int] = []
    /// The distribution each token was drawn from (token → probability), for speculative
    /// sampling; nil when the tokens were chosen deterministically.
    var probabilities: [[Int: Float]]? = nil

    var isEmpty: Bool { tokens.isEmpty }

    func prefix(_ n: Int) -> Draft {
        Draft(tokens: Array(tokens.prefix(n)), probabilities: probabilities.map { Array($0.prefix(n)) })
    }
}
