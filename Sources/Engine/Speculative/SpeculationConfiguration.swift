/// Speculative decoding settings of the serving engine.
public struct SpeculationConfiguration: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// Plain decoding: one token per sequence and pass.
        case off
        /// Prompt lookup: drafts copied from earlier in the sequence.
        case ngram
        /// A smaller model with the same vocabulary drafts greedily.
        case draft
    }

    public var mode: Mode = .off
    /// Most tokens drafted for one sequence in one step.
    public var maxDraft = 16
    /// Continuations prompt lookup drafts at most: 1 is a chain, more a token tree of the
    /// chain and branches off it, verified in the same pass.
    public var treeWidth = 1
    /// Choose each draft's length from measured acceptance and the cost of the verify pass
    /// (off: always draft `maxDraft` where the proposer has that many, for measurement).
    public var adaptive = true
    /// Speculate seeded sampled requests too (their tokens keep the model's distribution
    /// but then depend on timing); for the statistical tests, which need seeds.
    var speculatesSeededSampling = false

    public init(mode: Mode = .off) { self.mode = mode }

    public func validate() throws {
        guard (1...64).contains(maxDraft) else { throw EngineError.invalidConfiguration("the draft length must be between 1 and 64 tokens, got \(maxDraft)") }
        guard (1...8).contains(treeWidth) else { throw EngineError.invalidConfiguration("the draft tree width must be between 1 and 8, got \(treeWidth)") }
    }
}
