@testable import Engine
import XCTest

/// Disaggregated prefill: blocks one engine computed, exported as they were computed and
/// imported by another, continue the prompt there exactly as if it had computed them.
extension ServingEngineTests {
    /// Runs an exporting request for `prompt` to its end; returns its blocks and how many
    /// outputs carried them.
    func export(_ prompt: [Int], on core: EngineCore) throws -> (blocks: [KVBlock], outputs: Int) {
        var r = GenerationRequest(prompt: prompt)
        r.parameters.maxTokens = 1
        r.exportsKV = true
        try core.add(id: 1, r)
        var blocks: [KVBlock] = [], outputs = 0
        while core.hasWork {
            for event in try core.step() where !event.output.kvBlocks.isEmpty {
                XCTAssertFalse(event.finished, "blocks come before the request's end")
                blocks += event.output.kvBlocks
                outputs += 1
            }
        }
        return (blocks, outputs)
    }

    func testImportedBlocksContinueAPromptAsIfComputedThere() throws {
        let golden = try goldenRequests(maxTokens: 16)
        // Golden prompts lengthened past a few blocks, and not a multiple of the block size.
        let prompts = golden.prefix(3).enumerated().map { i, r in Array((0..<40).flatMap { _ in r.prompt }.prefix(70 + 13 * i)) }
        // Prefill in chunks of 24 tokens: blocks leave over several steps, as chunks finish.
        let prefill = try makeCore { $0.tokenBudget = 24 }
        for (i, prompt) in prompts.enumerated() {
            var request = golden[i]
            request.prompt = prompt
            let colocated = try run([request], on: try makeCore())[0]

            let (blocks, outputs) = try export(prompt, on: prefill)
            let full = prompt.count / 16, rest = (prompt.count - 1) % 16
            XCTAssertEqual(blocks.count, full + (rest > 0 ? 1 : 0), "every full block of the prompt, then the rest but its last token")
            XCTAssertGreaterThan(outputs, 1, "blocks leave as their chunks finish, not at the end")
            var parent: UInt64?
            for (b, block) in blocks.prefix(full).enumerated() {
                XCTAssertEqual(block.tokens, Array(prompt[(b * 16)..<((b + 1) * 16)]))
                XCTAssertEqual(block.name, BlockManager.hash(parent: parent, tokens: prompt[(b * 16)..<((b + 1) * 16)]))
                parent = block.name
            }
            if rest > 0 {
                let start = (prompt.count - 1) / 16 * 16
                XCTAssertEqual(blocks.last?.tokens, Array(prompt[start..<(prompt.count - 1)]))
                XCTAssertEqual(blocks.last?.contents.count, 2 * prefill.cache.layers * rest * 2 * prefill.cache.rowWidth)
            }

            let decode = try makeCore()
            XCTAssertEqual(try decode.importBlocks(blocks), KVImport(imported: blocks.count))
            XCTAssertEqual(try decode.importBlocks(blocks), KVImport(alreadyCached: blocks.count), "a second import writes nothing")
            XCTAssertEqual(decode.currentStatistics().importedKVBlocks, blocks.count)
            let continued = try run([request], on: decode)[0]
            XCTAssertEqual(continued.tokens, colocated.tokens, "prompt \(i): greedy output as if computed here")
            XCTAssertEqual(continued.metrics?.cachedPromptTokens, prompt.count - 1, "prompt \(i): only the last token is computed here")
        }
        XCTAssertEqual(prefill.currentStatistics().exportedKVBlocks, prompts.reduce(0) { $0 + $1.count / 16 + (($1.count - 1) % 16 > 0 ? 1 : 0) })
    }

    /// A prompt that fills its blocks exactly: the last full block is shipped, and again
    /// without its last position, which the receiver computes.
    func testAPromptOfWholeBlocksShipsItsLastBlockTwice() throws {
        var request = try goldenRequests(maxTokens: 8)[1]
        request.prompt = Array((0..<40).flatMap { _ in request.prompt }.prefix(64))
        let colocated = try run([request], on: try makeCore())[0]
        let (blocks, _) = try export(request.prompt, on: try makeCore())
        XCTAssertEqual(blocks.map(\.tokens.count), [16, 16, 16, 16, 15])
        XCTAssertEqual(blocks.map(\.index), [0, 1, 2, 3, 3])
        let decode = try makeCore()
        XCTAssertEqual(try decode.importBlocks(blocks), KVImport(imported: 5))
        let continued = try run([request], on: decode)[0]
        XCTAssertEqual(continued.tokens, colocated.tokens)
        XCTAssertEqual(continued.metrics?.cachedPromptTokens, 63)
        // Two requests continuing the same imported prompt at once, and a third after them.
        let shared = try makeCore()
        _ = try shared.importBlocks(blocks)
        XCTAssertEqual(try run([request, request], on: shared).map(\.tokens), [colocated.tokens, colocated.tokens])
        XCTAssertEqual(try run([request], on: shared)[0].tokens, colocated.tokens)
    }

    func testAnEngineWithoutThePrefixCacheRefusesImports() throws {
        let core = try makeCore { $0.prefixCaching = false }
        XCTAssertThrowsError(try core.importBlocks([])) {
            XCTAssertEqual($0 as? EngineError, .invalidConfiguration("importing KV blocks needs the prefix cache, which this engine runs without"))
        }
    }

    /// A prefill worker's short prompt passes a long one already running at a lower
    /// priority, which keeps a block's worth of each step meanwhile.
    func testAHigherPriorityPromptPassesARunningOneWhichKeepsABlockAStep() throws {
        let core = try makeCore { $0.tokenBudget = 32 }
        let prompts = try goldenRequests(maxTokens: 1).map(\.prompt)
        var long = GenerationRequest(prompt: Array((0..<60).flatMap { _ in prompts[0] }.prefix(200)))
        long.priority = 200
        var short = GenerationRequest(prompt: Array((0..<20).flatMap { _ in prompts[1] }.prefix(40)))
        short.priority = 40
        try core.add(id: 1, long)
        _ = try core.step()
        try core.add(id: 2, short)
        _ = try core.step()
        func computed(_ r: GenerationRequest) -> Int? { core.scheduler.running.first { $0.promptCount == r.prompt.count }?.computed }
        XCTAssertEqual(computed(short), 16, "the short prompt takes what the long one's block leaves")
        XCTAssertEqual(computed(long), 48)
        _ = try core.step()
        XCTAssertEqual(computed(short), 40, "running, it goes first and completes")
        XCTAssertEqual(computed(long), 56)
    }

    /// Priorities, preemption and deferred prompts together: every request's greedy tokens
    /// are still its tokens alone (a prompt preempted and admitted again in one step runs once).
    func testMixedPrioritiesUnderPreemptionGiveEachRequestsOwnTokens() throws {
        let golden = try goldenRequests(maxTokens: 30)
        var g = SplitMix64(seed: 15)
        let requests = (0..<10).map { i -> GenerationRequest in
            var r = golden[i % golden.count]
            r.prompt = Array((0..<40).flatMap { _ in r.prompt }.prefix(Int.random(in: 20...100, using: &g)))
            r.priority = Int.random(in: 0...3, using: &g)
            return r
        }
        let alone = try requests.map { try run([$0], on: try makeCore())[0].tokens }
        let blockBytes = 16 * (try load()).0.kvBytesPerPosition
        let tight = try makeCore { $0.tokenBudget = 32; $0.kvCacheBytes = 12 * blockBytes; $0.swapMemoryBytes = 0; $0.swapFileBytes = 0 }
        var preempted = 0
        let together = try run(requests, on: tight) { preempted = $0.preemptions }
        XCTAssertGreaterThan(preempted, 0, "the cache is small enough to preempt")
        XCTAssertEqual(together.map(\.tokens), alone)
    }

    /// An import larger than the free cache keeps its prompt's head and drops its tail,
    /// instead of evicting its own head to store the tail.
    func testAnImportLargerThanTheCacheKeepsItsHead() throws {
        var request = try goldenRequests(maxTokens: 4)[0]
        request.prompt = Array((0..<40).flatMap { _ in request.prompt }.prefix(120))
        let (blocks, _) = try export(request.prompt, on: try makeCore())
        XCTAssertEqual(blocks.count, 8)
        let blockBytes = 16 * (try load()).0.kvBytesPerPosition
        let small = try makeCore { $0.kvCacheBytes = 5 * blockBytes }
        XCTAssertEqual(try small.importBlocks(Array(blocks.prefix(3))), KVImport(imported: 3))
        XCTAssertEqual(try small.importBlocks(Array(blocks.dropFirst(3)), earlier: 3), KVImport(imported: 2, dropped: 3))
        XCTAssertEqual(small.scheduler.blocks.cachedPrefix(of: request.prompt).positions, 80, "the first five blocks are found")
    }
}
