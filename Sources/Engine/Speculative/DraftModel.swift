import Foundation
import Models
import Tokenizer

/// A smaller model that drafts for a larger one: any model whose vocabulary is the target's
/// token for token (Qwen2.5-Coder-0.5B for the 1.5B, say), run by the same engine step with
/// its own paged KV cache.
public struct DraftModel: Sendable {
    public let model: any LanguageModel
    public let tokenizer: Tokenizer

    public init(model: any LanguageModel, tokenizer: Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
    }

    /// Refuses a draft model whose token ids mean other text than the target's: its drafts
    /// would be verified against tokens it never meant.
    public func checkVocabulary(against target: any LanguageModel, tokenizer targetTokenizer: Tokenizer) throws {
        let mine = tokenizer.vocabulary.tokens, theirs = targetTokenizer.vocabulary.tokens
        guard model.vocabularySize == target.vocabularySize, mine.count == theirs.count else {
            throw EngineError.invalidConfiguration(
                "the draft model's vocabulary (\(mine.count) tokens, \(model.vocabularySize) logits) is not the model's (\(theirs.count) tokens, \(target.vocabularySize) logits)")
        }
        if let i = mine.indices.first(where: { mine[$0] != theirs[$0] }) {
            throw EngineError.invalidConfiguration("the draft model's vocabulary is not the model's: token \(i) is \(String(reflecting: mine[i])) in the draft model but \(String(reflecting: theirs[i])) in the model")
        }
    }
}

/// Drafts with a draft model: each sequence's accepted tokens are caught up into the draft
/// model's own KV cache (one batched pass for every sequence), then the draft model
/// continues greedily, or by sampling with the request's parameters, one batched pass per
/// drafted token. Its cache holds, per sequence, the keys and values of the tokens it last
/// saw; after a verify pass the part that still agrees with the sequence is kept.
final class DraftModelProposer: Proposer {
    let model: any LanguageModel
    let cache: PagedKVCache
    let blocks: BlockManager
    let contextLength: Int

    private struct State {
        var blockTable: [Int32] = []
        /// Tokens whose keys and values the draft cache holds, from position 0.
        var cached: [Int] = []
        /// Prefix-cache names of the first full blocks, as the scheduler keeps them.
        var blockHashes: [UInt64] = []
        var sampler: Sampler
    }
    private var states: [ObjectIdentifier: State] = [:]
    /// Most tokens of one sequence's catch-up in one step.
    static let catchUpPerStep = 256

    /// A cache of as many positions as the target's (`blockCount` blocks), with a prefix
    /// cache of its own: a new sequence starts from the draft keys and values of the
    /// longest prefix an earlier one computed (a system prompt, the turns of a chat).
    init(_ draft: DraftModel, blockSize: Int, blockCount: Int, contextLength: Int) {
        model = draft.model
        // Catching up goes back into blocks the draft cache has left, whose staged keys are gone.
        cache = draft.model.makePagedCache(blockSize: blockSize, blockCount: blockCount, stagesQ4_0Keys: false)
        blocks = BlockManager(blockCount: blockCount, blockSize: blockSize, prefixCaching: true)
        self.contextLength = contextLength
    }

    /// A new sequence's state, starting from the cached blocks of its longest prefix.
    private func start(_ s: Sequence) throws -> State {
        var state = State(sampler: try draftSampler(for: s))
        let prefix = blocks.cachedPrefix(of: s.tokens)
        (state.blockTable, state.blockHashes) = (prefix.blocks, prefix.hashes)
        state.cached = Array(s.tokens.prefix(prefix.positions))
        return state
    }

    /// Names the full blocks of the first `stable` cached tokens (the sequence's own, which
    /// never change; drafted tokens past them may still be overwritten).
    private func register(_ state: inout State, stable: Int) {
        blocks.registerFullBlocks(state.blockTable, hashes: &state.blockHashes, tokens: state.cached, count: stable)
    }

    /// Seconds of the draft model's passes for one sequence: the first of a draft (the
    /// one or two tokens verification left, then logits) and each further one (one token),
    /// the best of three after one unmeasured pass.
    func measurePassSeconds() throws -> (first: Double, next: Double) {
        var table: [Int32] = []
        defer { for b in table { blocks.release(b) } }
        while table.count * blocks.blockSize < 2, let b = blocks.allocate() { table.append(b) }
        guard table.count * blocks.blockSize >= 2 else { return (0, 0) }
        func time(_ n: Int) throws -> Double {
            var batch = ForwardBatch()
            batch.append(Array(repeating: 0, count: n), firstPosition: 0, blockTable: table, logitsOfLast: 1)
            var best = Double.infinity
            for _ in 0..<3 {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try model.forward(batch, cache: cache)
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            return best
        }
        _ = try time(1)
        return (try time(2), try time(1))
    }

    func propose(_ requests: [(sequence: Sequence, limit: Int)]) throws -> [Draft] {
        var drafts = [Draft](repeating: Draft(), count: requests.count)
        // Catch up: every token the draft cache lacks, and logits after the last one.
        var active: [Int] = []
        var catchingUp = false
        var batch = ForwardBatch()
        for (i, (s, limit)) in requests.enumerated() where limit > 0 {
            let id = ObjectIdentifier(s)
            var state = try states[id] ?? start(s)
            var agree = zip(state.cached, s.tokens).prefix { $0 == $1 }.count
            agree = min(agree, s.tokens.count - 1)  // the last token is run again for its logits
            state.cached.removeLast(state.cached.count - agree)
            register(&state, stable: agree)
            let positions = s.tokens.count + limit - 1
            guard positions <= contextLength, reserve(&state, positions: positions) else {
                states[id] = state
                continue
            }
            // A long catch-up (a new prompt) goes in pieces, one per step, without a draft
            // until it is done, so that no step stalls on the whole prompt at once.
            let end = min(s.tokens.count, agree + Self.catchUpPerStep)
            batch.append(s.tokens[agree..<end], firstPosition: agree, blockTable: state.blockTable, logitsOfLast: end == s.tokens.count ? 1 : 0)
            state.cached += s.tokens[agree..<end]
            states[id] = state
            if end == s.tokens.count { active.append(i) } else { catchingUp = true }
        }
        if catchingUp && active.isEmpty, !batch.tokens.isEmpty {
            _ = try model.forward(batch, cache: cache)
            return drafts
        }
        var step = 0
        while !active.isEmpty {
            let logits = try model.forward(batch, cache: cache)
            let v = model.vocabularySize
            var next = ForwardBatch()
            var still: [Int] = []
            for (row, i) in active.enumerated() {
                let s = requests[i].sequence
                let id = ObjectIdentifier(s)
                var state = states[id]!
                let (token, q) = choose(Array(logits[(row * v)..<((row + 1) * v)]), history: s.tokens + drafts[i].tokens, sampler: &state.sampler)
                drafts[i].tokens.append(token)
                if let q { drafts[i].probabilities = (drafts[i].probabilities ?? []) + [q] }
                if drafts[i].tokens.count < requests[i].limit {
                    next.append([token], firstPosition: s.tokens.count + step, blockTable: state.blockTable, logitsOfLast: 1)
                    state.cached.append(token)
                    still.append(i)
                }
                states[id] = state
            }
            active = still
            batch = next
            step += 1
        }
        return drafts
    }

    /// Runs up to `catchUpPerStep` more of each prompt (all but its last token, which the
    /// first draft runs for its logits) through the draft model.
    func prepare(_ sequences: [Sequence]) throws {
        var batch = ForwardBatch()
        for s in sequences {
            let id = ObjectIdentifier(s)
            var state = try states[id] ?? start(s)
            let agree = min(zip(state.cached, s.tokens).prefix { $0 == $1 }.count, s.promptCount - 1)
            state.cached.removeLast(state.cached.count - agree)
            register(&state, stable: agree)
            let end = min(s.promptCount - 1, agree + Self.catchUpPerStep)
            if end > agree, end <= contextLength, reserve(&state, positions: end) {
                batch.append(s.tokens[agree..<end], firstPosition: agree, blockTable: state.blockTable, logitsOfLast: 0)
                state.cached += s.tokens[agree..<end]
            }
            states[id] = state
        }
        if !batch.tokens.isEmpty { _ = try model.forward(batch, cache: cache) }
    }

    func release(_ sequence: Sequence) {
        guard let state = states.removeValue(forKey: ObjectIdentifier(sequence)) else { return }
        for b in state.blockTable { blocks.release(b) }
    }

    /// Blocks for `positions` positions; false when the draft cache has no more.
    private func reserve(_ state: inout State, positions: Int) -> Bool {
        while state.blockTable.count * blocks.blockSize < positions {
            guard let b = blocks.allocate() else { return false }
            state.blockTable.append(b)
        }
        return true
    }

    /// The request's sampling, drawn from its own generator (so that drafting does not
    /// move the target sampler's draws).
    private func draftSampler(for s: Sequence) throws -> Sampler {
        var p = s.request.request.parameters.sampling
        p.seed = (p.seed ?? UInt64.random(in: .min ... .max)) &+ 0x5DEE_CE66 &+ UInt64(s.index)
        return try Sampler(p)
    }

    /// The drafted token and, when it was sampled, the distribution it came from.
    private func choose(_ logits: [Float], history: [Int], sampler: inout Sampler) -> (Int, [Int: Float]?) {
        let q = sampler.distribution(logits, history: history)
        if sampler.parameters.temperature == 0 { return (q[0].token, nil) }
        let u = sampler.uniform()
        var cumulative: Float = 0
        for (token, p) in q {
            cumulative += p
            if u < cumulative { return (token, Dictionary(uniqueKeysWithValues: q.map { ($0.token, $0.probability) })) }
        }
        return (q[q.count - 1].token, Dictionary(uniqueKeysWithValues: q.map { ($0.token, $0.probability) }))
    }
}
