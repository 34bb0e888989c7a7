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

/// Tokens drafted to follow a sequence's tokens: a chain, and perhaps other continuations
/// branching off it (a token tree, as SpecInfer verifies them). The tree is verified in one
/// pass: at each position the target's token is looked up among the drafted children, so a
/// wrong guess in the chain can still be followed by a right one in a branch.
struct Draft {
    var tokens: [Int] = []
    /// The distribution each token was drawn from (token → probability), for speculative
    /// sampling; nil when the tokens were chosen deterministically.
    var probabilities: [[Int: Float]]? = nil
    /// Deterministic continuations that leave the chain (only when `probabilities` is nil),
    /// each with a first token unlike the chain's and every other branch's at its place.
    var branches: [Branch] = []

    /// A continuation that follows the sequence's tokens and the chain's first `after`
    /// tokens, then goes its own way.
    struct Branch: Equatable {
        var after: Int
        var tokens: [Int]
    }

    var isEmpty: Bool { tokens.isEmpty && branches.isEmpty }
    /// Drafted tokens in all, the chain's and the branches'.
    var count: Int { branches.reduce(tokens.count) { $0 + $1.tokens.count } }

    /// The chain's first `n` tokens, with the branches that leave it within them.
    func prefix(_ n: Int) -> Draft {
        Draft(tokens: Array(tokens.prefix(n)), probabilities: probabilities.map { Array($0.prefix(n)) },
              branches: branches.filter { $0.after <= n })
    }
}
