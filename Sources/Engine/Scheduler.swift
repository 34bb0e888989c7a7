import Models

/// The tokens of one sequence that run in this step.
struct ScheduledChunk {
    let sequence: Sequence
    /// The sequence's own uncomputed tokens in this step.
    let count: Int
    /// Its drafted tokens verified in this step (after all of its own).
    var drafted = 0
}

/// Iteration-level scheduling (Orca, Yu et al. 2022) with chunked prefill (Sarathi-Serve,
/// Agrawal et al. 2024): every step takes at most `tokenBudget` tokens, first one decode
/// token for each running sequence, then the rest of the budget for prompts, in chunks.
/// Order is priority, then arrival. When a sequence needs a block and none is free, the
/// last sequence in that order is preempted: its blocks are released (its full blocks stay
/// in the prefix cache), its keys and values are swapped out when `SwapSpace` finds that
/// cheaper than recomputing them, and it is swapped back in or recomputed when it is
/// admitted again.
final class Scheduler {
    let blocks: BlockManager
    let cache: PagedKVCache
    let tokenBudget: Int
    let maxRunning: Int
    /// Blocks admission leaves free, so that running sequences can grow without preempting.
    let watermark: Int
    private(set) var waiting: [Sequence] = []
    private(set) var running: [Sequence] = []
    private(set) var preemptions = 0
    private(set) var promptTokensQueried = 0
    private(set) var promptTokensCached = 0
    let swap: SwapSpace?
    /// Tokens per second of the engine's prompt-heavy steps, for the swap decision.
    var prefillTokensPerSecond: Double?

    init(cache: PagedKVCache, tokenBudget: Int, maxRunning: Int, prefixCaching: Bool, swap: SwapSpace? = nil) {
        self.cache = cache
        self.swap = swap
        blocks = BlockManager(blockCount: cache.blockCount, blockSize: cache.blockSize, prefixCaching: prefixCaching)
        if cache.stagesKeys { blocks.onFree = { [cache] in cache.close(Int($0)) } }
        self.tokenBudget = tokenBudget
        self.maxRunning = maxRunning
        watermark = max(1, cache.blockCount / 100)
    }

    var hasWork: Bool { !waiting.isEmpty || !running.isEmpty }

    func enqueue(_ sequence: Sequence) { insert(sequence, into: &waiting) }

    /// A sample forked from a running one; it holds its parent's blocks too.
    func addRunning(_ sequence: Sequence) {
        for b in sequence.blockTable { blocks.retain(b) }
        insert(sequence, into: &running)
    }

    /// Takes a sequence out of the engine and releases its blocks.
    func remove(_ sequence: Sequence) {
        waiting.removeAll { $0 === sequence }
        running.removeAll { $0 === sequence }
        releaseBlocks(of: sequence)
        swap?.drop(sequence)
    }

    /// The chunks to run in the next step, their blocks allocated.
    func schedule() -> [ScheduledChunk] {
        var budget = tokenBudget
        var scheduled: [ScheduledChunk] = []

        // Sequences already running, decodes first so that they never wait behind a prompt,
        // then prompts, except those of a lower priority than a waiting sequence: they take
        // what is left after it (a prefill worker's short prompts pass a long one).
        let prompts = running.filter { $0.uncomputed > 1 }
        let deferred = waiting.first.map { first in prompts.filter { $0.request.request.priority > first.request.request.priority } } ?? []
        let order = running.filter { $0.uncomputed == 1 } + prompts.filter { p in !deferred.contains { $0 === p } }
        for sequence in order where budget > 0 {
            guard running.contains(where: { $0 === sequence }) else { continue }  // preempted meanwhile
            var granted = reserve(sequence, tokens: min(sequence.uncomputed, budget))
            while granted == 0, let victim = running.last {
                preempt(victim)
                if let i = scheduled.firstIndex(where: { $0.sequence === victim }) {
                    budget += scheduled[i].count + scheduled[i].drafted
                    scheduled.remove(at: i)
                }
                if victim === sequence { break }
                granted = reserve(sequence, tokens: min(sequence.uncomputed, budget))
            }
            if granted > 0 {
                scheduled.append(ScheduledChunk(sequence: sequence, count: granted))
                budget -= granted
            }
        }

        // New (and preempted) sequences, while the budget and the free blocks allow. One
        // whose next block another sequence is computing waits for it to reach the prefix
        // cache instead of computing it a second time (requests with one system prompt that
        // arrive together compute it once); those behind it go on.
        var inFlight = blocksInFlight()
        var i = 0
        // A block's worth of every step stays for deferred prompts, so a stream of
        // higher-priority ones slows them down but never stops them.
        let kept = deferred.isEmpty ? 0 : min(budget, blocks.blockSize)
        budget -= kept
        while budget > 0, running.count < maxRunning, i < waiting.count {
            let sequence = waiting[i]
            if let swap, swap.holds(sequence) {
                // Back in only when its blocks and this step's tokens fit beside the reserve.
                let positions = swap.positions(of: sequence), want = min(sequence.tokens.count - positions, budget)
                let needed = (positions + want + blocks.blockSize - 1) / blocks.blockSize
                guard blocks.freeCount - needed >= watermark || running.isEmpty, swapIn(sequence, from: swap) else { break }
            } else if sequence.computed == 0 {
                if waitsForBlockInFlight(sequence, inFlight) {
                    i += 1
                    continue
                }
                reuseCachedPrefix(sequence)
            }
            let want = min(sequence.uncomputed, budget)
            let newBlocks = max(0, (sequence.computed + want + blocks.blockSize - 1) / blocks.blockSize - sequence.blockTable.count)
            let admissible = blocks.freeCount - newBlocks >= watermark || running.isEmpty
            let granted = admissible ? reserve(sequence, tokens: want) : 0
            guard granted > 0 else {
                releaseBlocks(of: sequence)
                break
            }
            waiting.remove(at: i)
            insert(sequence, into: &running)
            inFlight.formUnion(plannedBlockNames(of: sequence))
            if sequence.request.firstScheduled == nil {
                sequence.request.firstScheduled = .now
                promptTokensQueried += sequence.promptCount
                promptTokensCached += min(sequence.computed, sequence.promptCount)
                sequence.request.cachedPromptTokens = min(sequence.computed, sequence.promptCount)
            }
            scheduled.append(ScheduledChunk(sequence: sequence, count: granted))
            budget -= granted
        }

        budget += kept
        // One preempted above and admitted again has its chunk already.
        for sequence in deferred where budget > 0 && running.contains(where: { $0 === sequence }) && !scheduled.contains(where: { $0.sequence === sequence }) {
            let granted = reserve(sequence, tokens: min(sequence.uncomputed, budget))
            guard granted > 0 else { break }
            scheduled.append(ScheduledChunk(sequence: sequence, count: granted))
            budget -= granted
        }

        // Drafts last, from what every sequence's own tokens and admission left of the
        // budget and of the free blocks: speculation never delays a prompt or a decode.
        for i in scheduled.indices where budget > 0 {
            let s = scheduled[i].sequence
            guard !s.draft.isEmpty, scheduled[i].count == s.uncomputed else { continue }
            s.draft = s.draft.prefix(reserveDraft(s, tokens: min(s.draft.tokens.count, budget)))
            budget -= s.draft.tokens.count
            budget -= reserveBranches(s, budget: budget)
            scheduled[i].drafted = s.draft.count
        }
        return scheduled
    }

    /// Records that the chunks ran: their tokens are computed, and blocks they filled are
    /// named for the prefix cache. Drafted tokens count only once verified (`accept`).
    func didRun(_ chunks: [ScheduledChunk]) {
        for chunk in chunks {
            chunk.sequence.computed += chunk.count
            registerFullBlocks(of: chunk.sequence)
        }
    }

    /// After a verify pass: the first `accepted` drafted tokens, along the draft's chain or
    /// along `branch` (now part of the sequence's tokens), keep their keys and values; the
    /// rejected ones' are dropped by releasing the blocks that held only them (what is left
    /// of them in a kept block is overwritten), and the other branches' blocks.
    func accept(_ s: Sequence, accepted: Int, branch: Int?) {
        precondition(s.computed + accepted < s.tokens.count, "accepted tokens must be the sequence's")
        if let branch {
            for b in s.blockTable[s.branchesFrom...] { blocks.release(b) }
            s.blockTable = s.branchTables[branch]
            s.branchTables.remove(at: branch)
        }
        releaseBranches(of: s)
        s.computed += accepted
        registerFullBlocks(of: s)
        let needed = (s.tokens.count + blocks.blockSize - 1) / blocks.blockSize
        while s.blockTable.count > needed { blocks.release(s.blockTable.removeLast()) }
    }

    private func registerFullBlocks(of s: Sequence) {
        blocks.registerFullBlocks(s.blockTable, hashes: &s.blockHashes, tokens: s.tokens, count: s.computed)
    }

    /// Blocks for up to `tokens` drafted tokens after all of `s`'s own, taken only from
    /// empty blocks beyond admission's reserve: a draft never preempts anyone and never
    /// evicts the prefix cache. Returns how many the blocks cover.
    private func reserveDraft(_ s: Sequence, tokens want: Int) -> Int {
        let bs = blocks.blockSize, end = s.tokens.count
        while s.blockTable.count * bs < end + want, blocks.freeCount > watermark, let b = blocks.allocate(evictingCached: false) { s.blockTable.append(b) }
        return max(0, min(want, s.blockTable.count * bs - end))
    }

    /// Blocks for the draft's branches while `budget` lasts, taken as the chain's are. A
    /// branch's tokens share positions with the chain's, so each branch has blocks of its own
    /// from the one that holds the sequence's last token on (the computed positions of that
    /// block copied in); the forward pass writes the tokens it shares with the chain into
    /// them too. Keeps the branches that got blocks, cut to the budget; returns their tokens.
    private func reserveBranches(_ s: Sequence, budget: Int) -> Int {
        let bs = blocks.blockSize, last = s.tokens.count - 1
        let from = last / bs
        var used = 0
        var kept: [Draft.Branch] = []
        for var branch in s.draft.branches {
            branch.tokens = Array(branch.tokens.prefix(budget - used))
            guard !branch.tokens.isEmpty else { break }
            let needed = (last + 1 + branch.after + branch.tokens.count + bs - 1) / bs - from
            var own: [Int32] = []
            while own.count < needed, blocks.freeCount > watermark, let b = blocks.allocate(evictingCached: false) { own.append(b) }
            guard own.count == needed else {
                for b in own { blocks.release(b) }
                break
            }
            cache.copyBlock(Int(s.blockTable[from]), to: Int(own[0]), positions: last % bs)
            s.branchTables.append(Array(s.blockTable[..<from]) + own)
            kept.append(branch)
            used += branch.tokens.count
        }
        s.draft.branches = kept
        s.branchesFrom = from
        return used
    }

    /// Releases the blocks of the branches `s` holds.
    func releaseBranches(of s: Sequence) {
        for table in s.branchTables { for b in table[s.branchesFrom...] { blocks.release(b) } }
        s.branchTables = []
    }

    /// Blocks for up to `tokens` more of `sequence`'s tokens, copying a shared block it is
    /// about to write into; returns how many tokens the blocks cover.
    private func reserve(_ s: Sequence, tokens want: Int) -> Int {
        let bs = blocks.blockSize
        let index = s.computed / bs
        if s.computed % bs != 0, index < s.blockTable.count, blocks.referenceCount(of: s.blockTable[index]) > 1 {
            guard let copy = blocks.allocate() else { return 0 }
            cache.copyBlock(Int(s.blockTable[index]), to: Int(copy), positions: s.computed % bs)
            blocks.release(s.blockTable[index])
            s.blockTable[index] = copy
        }
        while s.blockTable.count * bs < s.computed + want, let b = blocks.allocate() { s.blockTable.append(b) }
        return max(0, min(want, s.blockTable.count * bs - s.computed))
    }

    /// The names of the full blocks running sequences have yet to compute.
    private func blocksInFlight() -> Set<UInt64> {
        guard blocks.prefixCaching else { return [] }
        return Set(running.flatMap { plannedBlockNames(of: $0) })
    }

    /// The names of the full blocks of `s`'s tokens from the one it computes next on (none
    /// for a sequence that computes its whole prompt apart or is past its prompt).
    private func plannedBlockNames(of s: Sequence) -> ArraySlice<UInt64> {
        guard blocks.prefixCaching, !s.request.computesWholePrompt, s.uncomputed > 1 else { return [] }
        let names = blockNames(of: s)
        return names[min(names.count, s.computed / blocks.blockSize)...]
    }

    /// The names of the full blocks of `s`'s tokens when first asked (they only grow).
    private func blockNames(of s: Sequence) -> [UInt64] {
        if let names = s.plannedBlockNames { return names }
        var names: [UInt64] = []
        let bs = blocks.blockSize
        for k in 0..<(s.tokens.count / bs) {
            names.append(BlockManager.hash(parent: names.last, tokens: s.tokens[(k * bs)..<((k + 1) * bs)]))
        }
        s.plannedBlockNames = names
        return names
    }

    /// Whether the first block of `s` a cache hit could serve but the cache lacks is one a
    /// running sequence is computing (checked without retaining anything).
    private func waitsForBlockInFlight(_ s: Sequence, _ inFlight: Set<UInt64>) -> Bool {
        guard !inFlight.isEmpty, blocks.prefixCaching, !s.request.computesWholePrompt else { return false }
        let names = blockNames(of: s), reusable = min(names.count, (s.tokens.count - 1) / blocks.blockSize)
        guard let missing = names.prefix(reusable).first(where: { !blocks.isCached($0) }) else { return false }
        return inFlight.contains(missing)
    }

    /// Starts a sequence from the longest prefix of its tokens whose blocks are cached,
    /// always leaving at least one token to compute (its logits are needed).
    private func reuseCachedPrefix(_ s: Sequence) {
        guard s.blockTable.isEmpty, !s.request.computesWholePrompt else { return }
        (s.blockTable, s.blockHashes, s.computed) = blocks.cachedPrefix(of: s.tokens)
    }

    private func preempt(_ s: Sequence) {
        running.removeAll { $0 === s }
        if let swap { _ = swap.swapOut(s, cache: cache, prefillTokensPerSecond: prefillTokensPerSecond) }
        releaseBlocks(of: s)
        preemptions += 1
        insert(s, into: &waiting)
    }

    /// Blocks for `s`'s swapped positions, written back; false (nothing held) without them.
    private func swapIn(_ s: Sequence, from swap: SwapSpace) -> Bool {
        let count = (swap.positions(of: s) + blocks.blockSize - 1) / blocks.blockSize
        var table: [Int32] = []
        while table.count < count, let b = blocks.allocate() { table.append(b) }
        guard table.count == count else {
            for b in table { blocks.release(b) }
            return false
        }
        s.computed = swap.swapIn(s, cache: cache, table: table)
        s.blockTable = table
        s.blockHashes = []
        registerFullBlocks(of: s)
        return true
    }

    private func releaseBlocks(of s: Sequence) {
        releaseBranches(of: s)
        for b in s.blockTable { blocks.release(b) }
        s.blockTable = []
        s.blockHashes = []
        s.computed = 0
        s.draft = Draft()
    }

    private func insert(_ s: Sequence, into queue: inout [Sequence]) {
        let i = queue.firstIndex { s.precedes($0) } ?? queue.count
        queue.insert(s, at: i)
    }
}
