import Foundation
import Kernels
import Models
import Tokenizer

/// Settings of the serving engine.
public struct EngineConfiguration: Sendable {
    /// Positions per KV-cache block.
    public var blockSize = 16
    /// Memory for the KV cache; the number of blocks follows from it.
    public var kvCacheBytes = 512 << 20
    /// Most tokens one step runs (decode tokens plus prompt chunks).
    public var tokenBudget = 512
    /// Most sequences running at once.
    public var maxRunningSequences = 64
    public var prefixCaching = true
    /// Longest sequence (prompt and generated tokens); nil: the model's trained context.
    public var contextLength: Int? = nil
    public var speculation = SpeculationConfiguration()
    /// Host memory for preempted sequences' keys and values, then a temporary file of up to
    /// `swapFileBytes` past it; 0 and 0 recompute every preempted sequence.
    public var swapMemoryBytes = 1 << 30
    public var swapFileBytes = 4 << 30

    public init() {}

    public func validate() throws {
        func check(_ ok: Bool, _ message: String) throws { if !ok { throw EngineError.invalidConfiguration(message) } }
        try check((1...4096).contains(blockSize), "the block size must be between 1 and 4096 positions, got \(blockSize)")
        try check(tokenBudget >= 1 && tokenBudget <= 1 << 16, "the token budget must be between 1 and 65536, got \(tokenBudget)")
        try check(maxRunningSequences >= 1 && maxRunningSequences <= 4096, "the running-sequence limit must be between 1 and 4096, got \(maxRunningSequences)")
        try check(kvCacheBytes > 0, "the KV cache needs memory")
        try check(swapMemoryBytes >= 0 && swapFileBytes >= 0, "swap sizes cannot be negative")
        if let contextLength { try check(contextLength >= 2, "the context must hold at least 2 tokens, got \(contextLength)") }
        try speculation.validate()
    }
}

public enum EngineError: Error, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    case exceedsKVCache(positions: Int, capacity: Int)
    case invalidSamples(Int)
    case invalidLogprobs(Int)
    case invalidEmbeddingRequest
    case invalidResume(String)
    /// KV blocks asked of or given to a worker whose keys are kivi4.
    case kvTransferUnsupported
    case shutDown

    public var description: String {
        switch self {
        case .invalidConfiguration(let message): message
        case .exceedsKVCache(let positions, let capacity):
            "the request needs \(positions) KV-cache positions but the whole cache holds \(capacity); lower max_tokens or give the cache more memory"
        case .invalidSamples(let n): "n must be between 1 and \(GenerationRequest.maxSamples), got \(n)"
        case .invalidLogprobs(let k): "logprobs must be between 0 and \(GenerationRequest.maxLogprobs), got \(k)"
        case .invalidEmbeddingRequest: "an embedding request generates nothing: max tokens 0, one sample, no log-probabilities"
        case .invalidResume(let message): message
        case .kvTransferUnsupported:
            "this worker's keys are kivi4, whose blocks are not exported or imported: disaggregated serving needs f16, q8_0 or q4_0 keys"
        case .shutDown: "the engine is shutting down"
        }
    }
}

/// Counters and gauges of the engine, for metrics.
public struct EngineStatistics: Sendable, Equatable {
    public var waitingSequences = 0
    public var runningSequences = 0
    public var preemptions = 0
    /// Preempted sequences whose keys and values went to the swap space and came back, the
    /// bytes copied, the copies' seconds, and the predicted recompute time they saved;
    /// preempted sequences recomputed instead.
    public var swapOuts = 0
    public var swapIns = 0
    public var swapBytes = 0
    public var swapSeconds = 0.0
    public var swapSecondsSaved = 0.0
    public var recomputedPreemptions = 0
    public var kvBlocksUsed = 0
    public var kvBlocksFree = 0
    public var kvBlocksTotal = 0
    /// Positions per block.
    public var kvBlockSize = 0
    /// Full blocks the prefix cache remembers (held by a sequence or not).
    public var kvBlocksCached = 0
    public var promptTokensQueried = 0
    /// Prompt tokens that came from the prefix cache instead of being computed.
    public var promptTokensCached = 0
    public var promptTokensComputed = 0
    public var generatedTokens = 0
    /// Tokens proposers drafted, and how many of them verification kept.
    public var draftTokens = 0
    public var acceptedDraftTokens = 0
    /// Accepted drafted tokens of walks that left the chain for a branch of a token tree.
    public var acceptedBranchTokens = 0
    /// Tokens sampled under a grammar, and the time spent masking them.
    public var constrainedTokens = 0
    public var maskSeconds = 0.0
    /// The share of `maskSeconds` spent on what was not cached yet (new states' masks,
    /// finishes near a cap); of it, walks of the vocabulary, and new states' masks built
    /// from the split of top frames seen before (no walk).
    public var maskBuildSeconds = 0.0
    public var maskWalks = 0
    public var maskWalkSeconds = 0.0
    public var splitMasks = 0
    public var splitMaskSeconds = 0.0
    /// Prompt blocks shipped to another worker, and blocks taken in from one.
    public var exportedKVBlocks = 0
    public var importedKVBlocks = 0
    public var steps = 0
    public var finishedRequests = 0
    public var abortedRequests = 0

    public init() {}
}

/// One step's news for one request.
struct EngineEvent {
    let request: UInt64
    let output: GenerationOutput
    /// The request's last event: every sample has finished.
    let finished: Bool
    /// Set when the request failed: its stream ends with this error instead of an output.
    var error: (any Error)? = nil
}

/// The engine's state machine, driven one step at a time by a single thread: requests in,
/// scheduling, one batched forward pass, sampling, outputs out. `Engine` runs it on its own
/// thread; tests may drive it directly.
final class EngineCore {
    let model: any LanguageModel
    let tokenizer: Tokenizer
    let configuration: EngineConfiguration
    let contextLength: Int
    let cache: PagedKVCache
    let scheduler: Scheduler
    let speculator: Speculator?
    private var requests: [UInt64: RequestState] = [:]
    private var sequences: [UInt64: [Sequence]] = [:]
    private var arrivals: UInt64 = 0
    var statistics = EngineStatistics()
    /// Compiled grammars, shared by the requests that use them.
    let grammars: GrammarCache

    /// `draftModel` drafts for `speculation.mode == .draft`; it must share the model's vocabulary.
    init(model: any LanguageModel, tokenizer: Tokenizer, configuration: EngineConfiguration, draftModel: DraftModel? = nil) throws {
        try configuration.validate()
        self.model = model
        self.tokenizer = tokenizer
        grammars = GrammarCache(tokenizer: tokenizer)
        self.configuration = configuration
        let blockBytes = model.kvBytesPerPosition * configuration.blockSize
        let blockCount = configuration.kvCacheBytes / blockBytes
        guard blockCount >= 1 else {
            throw EngineError.invalidConfiguration("\(configuration.kvCacheBytes) bytes of KV cache hold not even one block of \(blockBytes) bytes")
        }
        // The pool is committed up front: one larger than the machine would be killed midway.
        let physical = ProcessInfo.processInfo.physicalMemory
        guard UInt64(blockCount * blockBytes) < physical else {
            throw EngineError.invalidConfiguration(
                "a KV cache of \(configuration.kvCacheBytes >> 20) MiB does not fit in this machine's \(physical >> 20) MiB of memory")
        }
        // Without --context, a sequence may be as long as the model was trained for and the
        // pool can hold (vLLM's max_model_len): a model declaring 131,072 positions must not
        // make every request without max_tokens fail against a 16,384-position pool.
        let poolPositions = blockCount * configuration.blockSize
        contextLength = min(configuration.contextLength ?? poolPositions, model.trainedContextLength)
        let speculation = configuration.speculation
        // kivi4 keys keep a block's keys staged until a sequence holding it has moved past
        // it, which a verify pass's first token (always kept) tells; a prompt-lookup chain
        // rolls back only after that token. A draft model's own cache and a token tree's
        // branches write from positions that may be rolled back, which kivi4 keys do not
        // support. Nor are they swapped (an open block's keys live outside the pool), so
        // preempted sequences are recomputed.
        let stagesKeys = model.kvShape.type.keys.isPerChannel
        if stagesKeys {
            guard configuration.blockSize == ChannelKeys.positions else {
                throw EngineError.invalidConfiguration("kivi4 keys are quantized \(ChannelKeys.positions) positions at a time: the block size must be \(ChannelKeys.positions), got \(configuration.blockSize)")
            }
            guard speculation.mode == .off || (speculation.mode == .ngram && speculation.treeWidth == 1) else {
                throw EngineError.invalidConfiguration("draft models and token trees are not supported with kivi4 keys: use --speculative ngram with --draft-tree-width 1, or off, or another key type")
            }
        }
        cache = model.makePagedCache(blockSize: configuration.blockSize, blockCount: blockCount)
        let swap = configuration.swapMemoryBytes + configuration.swapFileBytes > 0 && !stagesKeys
            ? SwapSpace(memoryBytes: configuration.swapMemoryBytes, fileBytes: configuration.swapFileBytes) : nil
        scheduler = Scheduler(cache: cache, tokenBudget: configuration.tokenBudget, maxRunning: configuration.maxRunningSequences,
                              prefixCaching: configuration.prefixCaching, swap: swap)
        let proposer: (any Proposer)?
        switch speculation.mode {
        case .off: proposer = nil
        case .ngram: proposer = PromptLookup(tokenizer: tokenizer, width: speculation.treeWidth)
        case .draft:
            guard let draftModel else { throw EngineError.invalidConfiguration("speculative decoding with a draft model needs a draft model") }
            try draftModel.checkVocabulary(against: model, tokenizer: tokenizer)
            proposer = DraftModelProposer(draftModel, blockSize: configuration.blockSize, blockCount: blockCount, contextLength: contextLength)
        }
        if let proposer {
            let counts = Array(Set([1, 2, 4, 8, 16, 32, speculation.maxDraft + 1])).sorted()
            let measured = try Self.calibrate(model, cache: cache, blocks: scheduler.blocks, tokens: counts)
            let policy = SpeculationPolicy(maxDraft: speculation.maxDraft, calibration: measured.passes,
                                           secondsPerAttendedPosition: measured.secondsPerAttendedPosition)
            if let drafting = proposer as? DraftModelProposer { policy.draftSeconds = try drafting.measurePassSeconds() }
            speculator = Speculator(configuration: speculation, proposer: proposer, policy: policy)
        } else {
            speculator = nil
        }
    }

    /// What the speculation policy's cost model needs, measured on scratch blocks: the time
    /// of a pass of each token count at the start of a context, and attention's time per
    /// attended position, from a pass of 8 tokens after `attentionPositions` positions less
    /// the same pass at the start. After one unmeasured pass that maps the weights in, three
    /// rounds over every pass, the best of each one's three: this machine's speed drifts for
    /// seconds at a time, and in rounds a slow spell spoils one measurement of several
    /// passes rather than every measurement of one.
    private static func calibrate(_ model: any LanguageModel, cache: PagedKVCache, blocks: BlockManager,
                                  tokens counts: [Int]) throws -> (passes: [(tokens: Int, seconds: Double)], secondsPerAttendedPosition: Double) {
        let attentionTokens = 8, attentionPositions = 1024
        var table: [Int32] = []
        defer { for b in table { blocks.release(b) } }
        while table.count * cache.blockSize < attentionPositions + attentionTokens, let b = blocks.allocate() { table.append(b) }
        let room = table.count * cache.blockSize
        let usable = counts.filter { $0 <= room }
        guard !usable.isEmpty else { throw EngineError.invalidConfiguration("the KV cache is too small to measure the verify pass") }
        // Attention is measured where the cache holds enough positions to show it.
        let after = room - attentionTokens >= 256 ? min(attentionPositions, room - attentionTokens) : 0
        func pass(_ n: Int, from first: Int) throws -> Double {
            var batch = ForwardBatch()
            batch.append(Array(repeating: 0, count: n), firstPosition: first, blockTable: table, logitsOfLast: n)
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try model.forward(batch, cache: cache)
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        _ = try pass(usable.last!, from: 0)
        var best = [Double](repeating: .infinity, count: usable.count), late = Double.infinity
        for _ in 0..<3 {
            for (i, n) in usable.enumerated() { best[i] = min(best[i], try pass(n, from: 0)) }
            if after > 0 { late = min(late, try pass(attentionTokens, from: after)) }
        }
        // The same pass at the start is the table's own (every count list holds 8).
        let early = usable.firstIndex(of: attentionTokens).map { best[$0] }
        let attention = after > 0 && early != nil ? max(0, late - early!) / Double(attentionTokens * after) : 0
        return (Array(zip(usable, best)), attention)
    }

    var hasWork: Bool { scheduler.hasWork }

    /// Rejects requests that are malformed or could never finish.
    func validate(_ r: GenerationRequest) throws {
        guard !r.prompt.isEmpty else { throw GenerationError.emptyPrompt }
        // Scoring a prompt is a whole request even when nothing is generated after it.
        if r.pooling != nil {
            guard r.parameters.maxTokens == 0, r.samples == 1, r.logprobs == nil, r.promptLogprobs == nil else { throw EngineError.invalidEmbeddingRequest }
        }
        guard r.parameters.maxTokens >= (r.promptLogprobs == nil && r.pooling == nil ? 1 : 0) else { throw GenerationError.invalidMaxTokens(r.parameters.maxTokens) }
        guard (1...GenerationRequest.maxSamples).contains(r.samples) else { throw EngineError.invalidSamples(r.samples) }
        for k in [r.logprobs, r.promptLogprobs].compactMap({ $0 }) where !(0...GenerationRequest.maxLogprobs).contains(k) {
            throw EngineError.invalidLogprobs(k)
        }
        try r.parameters.sampling.validate()
        if r.exportsKV && cache.type.keys.isPerChannel { throw EngineError.kvTransferUnsupported }
        if !r.resumedTokens.isEmpty {
            guard r.samples == 1, r.promptLogprobs == nil, r.pooling == nil else {
                throw EngineError.invalidResume("resume_token_ids continues one sample: n must be 1, with no prompt log-probabilities")
            }
            guard r.resumedTokens.count < r.parameters.maxTokens else {
                throw EngineError.invalidResume("resume_token_ids holds \(r.resumedTokens.count) tokens, not fewer than max_tokens (\(r.parameters.maxTokens)): nothing is left to generate")
            }
            guard r.prompt.count + r.resumedTokens.count < contextLength else {
                throw GenerationError.promptTooLong(promptTokens: r.prompt.count + r.resumedTokens.count, contextLength: contextLength)
            }
        }
        guard r.prompt.count < contextLength else { throw GenerationError.promptTooLong(promptTokens: r.prompt.count, contextLength: contextLength) }
        for t in r.prompt + r.resumedTokens where t < 0 || t >= model.vocabularySize {
            throw ModelError.tokenOutOfRange(token: t, vocabularySize: model.vocabularySize)
        }
        // One sample must fit alone; the scheduler preempts the rest to make room.
        let positions = min(r.prompt.count + r.parameters.maxTokens, contextLength)
        let capacity = cache.blockCount * cache.blockSize
        guard positions <= capacity else { throw EngineError.exceedsKVCache(positions: positions, capacity: capacity) }
        if let c = r.parameters.constraint { _ = try grammars.automaton(for: c, showing: r.parameters.shownControlTokens) }
    }

    func add(id: UInt64, _ request: GenerationRequest) throws {
        try validate(request)
        arrivals += 1
        let state = RequestState(id: id, request: request, arrival: arrivals)
        let first = Sequence(request: state, index: 0, sampler: try sampler(for: request, sample: 0),
                             text: TextStream(tokenizer: tokenizer, stopStrings: request.parameters.stopStrings,
                                               shownControlTokens: request.parameters.shownControlTokens), pendingForks: request.samples - 1)
        // Tokens generated elsewhere: the sampler and the text are where they were after them.
        for t in request.resumedTokens {
            first.sampler.accept(t)
            _ = first.text.append(t)
        }
        requests[id] = state
        sequences[id] = [first]
        scheduler.enqueue(first)
    }

    /// Drops a request and releases its blocks; false when it is unknown or already done.
    @discardableResult
    func abort(id: UInt64) -> Bool {
        guard requests.removeValue(forKey: id) != nil else { return false }
        for s in sequences.removeValue(forKey: id) ?? [] { remove(s) }
        statistics.abortedRequests += 1
        return true
    }

    func currentStatistics() -> EngineStatistics {
        var s = statistics
        grammars.addStatistics(to: &s)
        s.waitingSequences = scheduler.waiting.count
        s.runningSequences = scheduler.running.count
        s.preemptions = scheduler.preemptions
        if let swap = scheduler.swap {
            s.swapOuts = swap.swapOuts
            s.swapIns = swap.swapIns
            s.swapBytes = swap.bytesMoved
            s.swapSeconds = swap.swapSeconds
            s.swapSecondsSaved = swap.secondsSaved
            s.recomputedPreemptions = swap.recomputed
        } else {
            s.recomputedPreemptions = scheduler.preemptions
        }
        s.kvBlocksUsed = scheduler.blocks.usedCount
        s.kvBlocksFree = scheduler.blocks.freeCount
        s.kvBlocksTotal = scheduler.blocks.blockCount
        s.kvBlockSize = configuration.blockSize
        s.kvBlocksCached = scheduler.blocks.cachedCount
        s.promptTokensQueried = scheduler.promptTokensQueried
        s.promptTokensCached = scheduler.promptTokensCached
        return s
    }

    /// Runs one step: draft, schedule, forward, verify and sample. Returns what each
    /// request produced.
    func step() throws -> [EngineEvent] {
        try speculator?.draft(scheduler.running, contextLength: contextLength, tokenBudget: configuration.tokenBudget)
        let chunks = scheduler.schedule()
        guard !chunks.isEmpty else { return [] }
        var batch = ForwardBatch()
        var logitIndex: [ObjectIdentifier: Int] = [:]
        // Chunks of prompts being scored: their first logit row and first position.
        var scored: [(sequence: Sequence, row: Int, position: Int, count: Int)] = []
        // Chunks of prompts being pooled: their first hidden row and first position.
        var pooled: [(sequence: Sequence, row: Int, position: Int, count: Int)] = []
        for chunk in chunks {
            let s = chunk.sequence
            let completes = s.computed + chunk.count == s.tokens.count
            let chain = chunk.drafted == 0 ? 0 : s.draft.tokens.count
            var rows = completes ? 1 + chain : 0
            if s.index == 0, s.request.scoresPrompt, s.computed < s.promptCount {
                scored.append((s, batch.logitRows.count, s.computed, chunk.count))
                rows = chunk.count + chain
            }
            if s.request.poolsPrompt, s.computed < s.promptCount {
                pooled.append((s, batch.hiddenRows.count, s.computed, chunk.count))
                batch.hiddenRows += (batch.tokens.count..<(batch.tokens.count + chunk.count))
            }
            if completes { logitIndex[ObjectIdentifier(s)] = batch.logitRows.count + rows - 1 - chain }
            let own = s.tokens[s.computed..<(s.computed + chunk.count)]
            let tokens = chunk.drafted == 0 ? Array(own) : Array(own) + s.draft.tokens
            batch.append(tokens, firstPosition: s.computed, blockTable: s.blockTable, logitsOfLast: rows)
            if chunk.drafted > 0 {
                // Each branch through its own blocks, which also take the tokens it shares
                // with the chain; its logits follow the chain's.
                let last = batch.tokens.count - 1 - chain
                for (branch, table) in zip(s.draft.branches, s.branchTables) {
                    batch.append(branch.tokens, firstPosition: s.computed + chunk.count + branch.after, blockTable: table,
                                 logitsOfLast: branch.tokens.count)
                    batch.mirrors += (last...(last + branch.after)).map { ($0, table) }
                }
            }
            if s.computed < s.promptCount { statistics.promptTokensComputed += min(chunk.count, s.promptCount - s.computed) }
        }
        let started = DispatchTime.now().uptimeNanoseconds
        let logits = try model.forward(batch, cache: cache)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        // Prompt-heavy steps give the recompute rate a swap is weighed against.
        if batch.tokens.count >= 64 {
            let rate = Double(batch.tokens.count) / seconds
            scheduler.prefillTokensPerSecond = scheduler.prefillTokensPerSecond.map { 0.8 * $0 + 0.2 * rate } ?? rate
        }
        scheduler.didRun(chunks)
        statistics.steps += 1
        var events = exportBlocks(of: chunks)

        let v = model.vocabularySize
        func row(_ i: Int) -> [Float] { Array(logits[(i * v)..<((i + 1) * v)]) }
        for (s, first, position, count) in scored {
            let state = s.request, k = state.request.promptLogprobs ?? 0
            // Row j follows position + j and scores the prompt token after it, each once.
            for j in 0..<count where position + j + 1 < s.promptCount && position + j == state.promptLogprobs.count {
                state.promptLogprobs.append(Self.logprobs(of: s.tokens[position + j + 1], in: row(first + j), top: k))
            }
        }
        let width = model.hiddenWidth, hiddenStart = batch.logitRows.count * v
        for (s, first, position, count) in pooled {
            let state = s.request
            for j in 0..<count where position + j == state.pooledPositions {
                let hidden = logits[(hiddenStart + (first + j) * width)..<(hiddenStart + (first + j + 1) * width)]
                Self.pool(hidden, position: position + j, of: s.promptCount, by: state.request.pooling!, into: &state.pooled)
                state.pooledPositions += 1
            }
        }
        for chunk in chunks {
            let s = chunk.sequence
            guard let first = logitIndex[ObjectIdentifier(s)] else { continue }
            if s.request.request.parameters.maxTokens == 0 {
                events += finishScoring(s)
                continue
            }
            if chunk.drafted > 0 {
                events += verify(s, draft: s.draft, logits: (0...chunk.drafted).map { row(first + $0) })
                continue
            }
            let rowLogits = row(first)
            var samples = [s]
            if s.pendingForks > 0 {
                samples += try fork(s)
            }
            for sample in samples {
                let profile = model.profile, started = profile.isEnabled ? DispatchTime.now().uptimeNanoseconds : 0
                let token = sample.sampler.sample(rowLogits, history: sample.tokens).token
                if started > 0 { profile.add(.sampling, DispatchTime.now().uptimeNanoseconds - started) }
                events += emit(sample, token: token, logits: rowLogits).events
            }
        }
        return events
    }

    /// Verifies a draft position by position (`logits[0]` follows the sequence's tokens,
    /// `logits[i]` the chain's first i drafted tokens, and each branch's rows follow the
    /// chain's in order): each drafted token is kept or replaced as speculative sampling
    /// decides, up to the first replacement; when all are kept, the last logits give one
    /// more token. Where branches leave the chain, the token is drawn from the target's own
    /// distribution and kept if the chain or a branch drafted it, which is speculative
    /// sampling for several deterministic drafts at once. Every token is emitted as plain
    /// decoding would emit it, so stop strings, end-of-generation and max_tokens cut a draft
    /// exactly where they would cut plain output.
    private func verify(_ s: Sequence, draft: Draft, logits: [[Float]]) -> [EngineEvent] {
        var events: [EngineEvent] = []
        var accepted = 0, verified = 0
        var finished = false
        // The walk: which branch it follows (nil: the chain), the row of logits that follow
        // the tokens kept so far, and the drafted tokens ahead of it.
        var branch: Int? = nil, row = 0, ahead = draft.tokens[...]
        var branchRows: [Int] = [], nextRow = 1 + draft.tokens.count
        for b in draft.branches {
            branchRows.append(nextRow)
            nextRow += b.tokens.count
        }
        while true {
            let rowLogits = logits[row]
            let leaving = branch == nil ? draft.branches.indices.filter { draft.branches[$0].after == accepted } : []
            let token: Int
            var kept = false
            if leaving.isEmpty, let next = ahead.first {
                let target = s.sampler.distribution(rowLogits, history: s.tokens)
                let outcome = SpeculativeSampling.verify(draft: next, draftProbabilities: branch == nil ? draft.probabilities?[accepted] : nil,
                                                         target: target, sampler: &s.sampler)
                token = outcome.token
                kept = outcome.accepted
                verified += 1
                if kept { row += 1; ahead = ahead.dropFirst() }
            } else {
                token = s.sampler.sample(rowLogits, history: s.tokens).token
                if !leaving.isEmpty {
                    verified += 1
                    if ahead.first == token {
                        kept = true
                        row += 1
                        ahead = ahead.dropFirst()
                    } else {
                        let taken = leaving.first { draft.branches[$0].tokens[0] == token }
                        s.branchAcceptance.observe(drafted: 1, accepted: taken == nil ? 0 : 1)
                        if let b = taken {
                            kept = true
                            branch = b
                            row = branchRows[b]
                            ahead = draft.branches[b].tokens.dropFirst()
                        }
                    }
                }
            }
            let emitted = emit(s, token: token, logits: rowLogits)
            events += emitted.events
            if kept { accepted += 1 }
            if emitted.finished { finished = true; break }
            if !kept { break }
        }
        // Drafted tokens past an end (end-of-generation, a stop string) were never in question.
        statistics.draftTokens += verified
        statistics.acceptedDraftTokens += accepted
        if branch != nil { statistics.acceptedBranchTokens += accepted }
        s.request.draftTokens += verified
        s.request.acceptedDraftTokens += accepted
        s.acceptance.observe(drafted: verified, accepted: accepted)
        s.draft = Draft()
        if finished { scheduler.releaseBranches(of: s) } else { scheduler.accept(s, accepted: accepted, branch: branch) }
        return events
    }

    /// The other samples of `parent`'s request, sharing its computed prompt.
    private func fork(_ parent: Sequence) throws -> [Sequence] {
        let request = parent.request.request
        let children = try (1...parent.pendingForks).map { i in
            Sequence(forking: parent, index: i, sampler: try sampler(for: request, sample: i),
                     text: TextStream(tokenizer: tokenizer, stopStrings: request.parameters.stopStrings,
                                      shownControlTokens: request.parameters.shownControlTokens))
        }
        parent.pendingForks = 0
        for child in children { scheduler.addRunning(child) }
        sequences[parent.request.id, default: []] += children
        return children
    }

    private func sampler(for request: GenerationRequest, sample: Int) throws -> Sampler {
        var p = request.parameters.sampling
        if let seed = p.seed { p.seed = seed &+ UInt64(sample) }
        let constraint = try request.parameters.constraint.map {
            GrammarConstraint(automaton: try grammars.automaton(for: $0, showing: request.parameters.shownControlTokens), maxTokens: request.parameters.maxTokens, triggers: $0.triggers)
        }
        return try Sampler(p, constraint: constraint)
    }

    /// Appends a sampled token to a sequence, finishes it if it is done, and reports both.
    private func emit(_ s: Sequence, token: Int, logits: [Float]) -> (events: [EngineEvent], finished: Bool) {
        let state = s.request
        // A sample of a request that failed earlier in this step.
        guard requests[state.id] != nil else { return ([], true) }
        let r = state.request
        let now = Date()
        if state.firstToken == nil { state.firstToken = now }
        if let last = s.lastToken { state.interTokenSeconds.append(now.timeIntervalSince(last)) }
        s.lastToken = now
        s.tokens.append(token)
        s.sampler.accept(token)
        if let failure = s.sampler.failure {
            // The constraint cannot follow the output any further: fail the request loudly
            // rather than let it go on unconstrained.
            abort(id: state.id)
            let output = GenerationOutput(index: s.index, text: "", tokens: [], logprobs: [], finishReason: nil, metrics: nil)
            return ([EngineEvent(request: state.id, output: output, finished: true, error: failure)], true)
        }
        statistics.generatedTokens += 1

        var output = GenerationOutput(index: s.index, text: "", tokens: [token], logprobs: [], finishReason: nil, metrics: nil)
        attachPromptLogprobs(&output, state)
        if let k = r.logprobs { output.logprobs = [Self.logprobs(of: token, in: logits, top: k)] }
        if !r.parameters.ignoreEndOfGeneration, tokenizer.isEndOfGeneration(token) {
            output.finishReason = .stop
        } else {
            output.text = s.text.append(token)
            if s.text.stopped {
                output.finishReason = .stop
            } else if s.generatedCount >= r.parameters.maxTokens || s.tokens.count >= contextLength {
                output.finishReason = .length
            }
        }
        guard output.finishReason != nil else { return ([EngineEvent(request: state.id, output: output, finished: false)], false) }
        output.text += s.text.finish()
        if s.text.stopped { output.finishReason = .stop }
        return ([finishSample(s, output: output, at: now)], true)
    }

    /// Ends one sample with its last output; the request's last sample also ends the
    /// request and carries its metrics.
    private func finishSample(_ s: Sequence, output: GenerationOutput, at now: Date) -> EngineEvent {
        let state = s.request, r = state.request
        var output = output
        remove(s)
        // Forks happen before their parent's first token, so every sample is counted here.
        state.unfinishedSamples -= 1
        let finished = state.unfinishedSamples == 0
        if finished {
            let all = sequences.removeValue(forKey: state.id) ?? []
            requests[state.id] = nil
            statistics.finishedRequests += 1
            let start = state.submitted
            output.metrics = RequestMetrics(
                promptTokens: r.prompt.count, cachedPromptTokens: state.cachedPromptTokens, completionTokens: all.reduce(0) { $0 + $1.generatedCount },
                queueSeconds: (state.firstScheduled ?? now).timeIntervalSince(start), timeToFirstTokenSeconds: (state.firstToken ?? now).timeIntervalSince(start),
                interTokenSeconds: state.interTokenSeconds, totalSeconds: now.timeIntervalSince(start),
                draftTokens: state.draftTokens, acceptedDraftTokens: state.acceptedDraftTokens)
        }
        return EngineEvent(request: state.id, output: output, finished: finished)
    }

    /// A request with `maxTokens` 0 ends once its prompt is scored: every sample, empty.
    private func finishScoring(_ s: Sequence) -> [EngineEvent] {
        let state = s.request, now = Date()
        if state.firstToken == nil { state.firstToken = now }
        var outputs = (0...s.pendingForks).map { GenerationOutput(index: $0, text: "", tokens: [], logprobs: [], finishReason: .length, metrics: nil) }
        attachPromptLogprobs(&outputs[0], state)
        if let pooling = state.request.pooling {
            let divisor = pooling == .mean ? Double(state.pooledPositions) : 1
            outputs[0].embedding = state.pooled.map { Float($0 / divisor) }
        }
        // The unforked parent stands for every sample.
        s.pendingForks = 0
        state.unfinishedSamples = 1
        let last = finishSample(s, output: outputs.removeLast(), at: now)
        return outputs.map { EngineEvent(request: state.id, output: $0, finished: false) } + [last]
    }

    /// Adds prompt position `position`'s hidden state to `pooled` as `pooling` combines them.
    static func pool(_ hidden: ArraySlice<Float>, position: Int, of count: Int, by pooling: Pooling, into pooled: inout [Double]) {
        if pooled.isEmpty { pooled = [Double](repeating: 0, count: hidden.count) }
        switch pooling {
        case .mean: for (i, h) in zip(pooled.indices, hidden) { pooled[i] += Double(h) }
        case .cls: if position == 0 { pooled = hidden.map(Double.init) }
        case .last: if position == count - 1 { pooled = hidden.map(Double.init) }
        }
    }

    private func attachPromptLogprobs(_ output: inout GenerationOutput, _ state: RequestState) {
        guard state.request.promptLogprobs != nil, !state.promptLogprobsSent else { return }
        output.promptLogprobs = state.promptLogprobs
        state.promptLogprobsSent = true
    }

    private func remove(_ s: Sequence) {
        scheduler.remove(s)
        speculator?.release(s)
    }

    static func logprobs(of token: Int, in logits: [Float], top k: Int) -> TokenLogprobs {
        let lp = Evaluation.logSoftmax(logits[...])
        let top = k > 0 ? TopK.indices(of: logits, k: k).map { TokenLogprobs.Entry(token: $0, logprob: lp[$0]) } : []
        return TokenLogprobs(chosen: .init(token: token, logprob: lp[token]), top: top)
    }
}
