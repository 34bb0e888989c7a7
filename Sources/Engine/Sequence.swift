import Foundation
import Tokenizer

/// What the engine tracks of one request: its samples, timing and counts.
final class RequestState {
    let id: UInt64
    let request: GenerationRequest
    let arrival: UInt64
    let submitted: Date
    var firstScheduled: Date?
    var firstToken: Date?
    var cachedPromptTokens = 0
    /// Tokens drafted for the request's samples, and how many of them verification kept.
    var draftTokens = 0
    var acceptedDraftTokens = 0
    var interTokenSeconds: [Double] = []
    var unfinishedSamples: Int
    /// Prompt tokens 1, 2, ... scored so far (in order, once, whatever preemption recomputes).
    var promptLogprobs: [TokenLogprobs] = []
    var promptLogprobsSent = false

    /// The pooled hidden states so far (a sum, for mean pooling) and how many prompt
    /// positions went into them (in order, once, whatever preemption recomputes).
    var pooled: [Double] = []
    var pooledPositions = 0

    /// The names of the prompt's full blocks exported so far (in order, once, whatever
    /// preemption recomputes).
    var exportedNames: [UInt64] = []
    var exportedPartialBlock = false

    /// Whether the prompt still has tokens to score.
    var scoresPrompt: Bool { request.promptLogprobs != nil && promptLogprobs.count < request.prompt.count - 1 }
    /// Whether the prompt still has hidden states to pool.
    var poolsPrompt: Bool { request.pooling != nil && pooledPositions < request.prompt.count }
    /// Whether every prompt position must be computed here, none taken from the prefix cache.
    var computesWholePrompt: Bool { request.promptLogprobs != nil || request.pooling != nil }

    init(id: UInt64, request: GenerationRequest, arrival: UInt64) {
        self.id = id
        self.request = request
        self.arrival = arrival
        submitted = Date()
        unfinishedSamples = request.samples
    }
}

/// One sample being generated: its tokens (prompt, then generated), how many of them have
/// keys and values in the cache, and the blocks that hold those.
final class Sequence {
    let request: RequestState
    /// Sample index within the request.
    let index: Int
    var tokens: [Int]
    let promptCount: Int
    /// Tokens whose keys and values are in the cache: `tokens[..<computed]`.
    var computed = 0
    var blockTable: [Int32] = []
    /// Prefix-cache names of the first full blocks, in order.
    var blockHashes: [UInt64] = []
    /// The names of every full block of its tokens when it was first scheduled, computed or
    /// not (what others may wait for instead of computing it too).
    var plannedBlockNames: [UInt64]?
    var sampler: Sampler
    var text: TextStream
    var lastToken: Date?
    /// Further samples to fork off once the prompt is computed (n > 1).
    var pendingForks: Int
    /// Tokens drafted to follow `tokens`, verified in this step (speculative decoding).
    var draft = Draft()
    /// Block tables of the draft's branches in this step: the sequence's own blocks before
    /// `branchesFrom`, the branch's own from there on.
    var branchTables: [[Int32]] = []
    var branchesFrom = 0
    var acceptance = AcceptanceEstimate()
    /// How often, where the chain's token was wrong and branches left it, a branch had the
    /// right one (an even prior: branches cost tokens in every step they are drafted).
    var branchAcceptance = AcceptanceEstimate(priorAccepted: 1, priorRejected: 1)

    init(request: RequestState, index: Int, sampler: Sampler, text: TextStream, pendingForks: Int) {
        self.request = request
        self.index = index
        tokens = request.request.prompt + request.request.resumedTokens
        promptCount = request.request.prompt.count
        self.sampler = sampler
        self.text = text
        self.pendingForks = pendingForks
    }

    /// A sample that shares everything computed so far (the caller retains the blocks).
    init(forking parent: Sequence, index: Int, sampler: Sampler, text: TextStream) {
        request = parent.request
        self.index = index
        tokens = parent.tokens
        promptCount = parent.promptCount
        computed = parent.computed
        blockTable = parent.blockTable
        blockHashes = parent.blockHashes
        self.sampler = sampler
        self.text = text
        pendingForks = 0
    }

    var generatedCount: Int { tokens.count - promptCount }
    var uncomputed: Int { tokens.count - computed }

    /// Scheduling order: priority, then arrival, then sample index.
    func precedes(_ other: Sequence) -> Bool {
        let a = (request.request.priority, request.arrival, index), b = (other.request.request.priority, other.request.arrival, other.index)
        return a < b
    }
}
