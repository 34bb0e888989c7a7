@testable import Engine
import Foundation
import GGUF
import Kernels
import Models
import TestSupport
import Tokenizer
import XCTest

final class ServingEngineTests: XCTestCase {
    nonisolated(unsafe) static var loaded: (model: any LanguageModel, tokenizer: Tokenizer)?

    func load() throws -> (model: any LanguageModel, tokenizer: Tokenizer) {
        if let loaded = Self.loaded { return loaded }
        let file = try TestSupport.model()
        let loaded = (try ModelRegistry.load(file), try Tokenizer(file: file))
        Self.loaded = loaded
        return loaded
    }

    func makeCore(_ configure: (inout EngineConfiguration) -> Void = { _ in }) throws -> EngineCore {
        let (model, tokenizer) = try load()
        var c = EngineConfiguration()
        c.contextLength = 2048
        configure(&c)
        return try EngineCore(model: model, tokenizer: tokenizer, configuration: c)
    }

    /// The KV pool is committed when the engine starts, so one larger than the machine is
    /// refused with both sizes instead of the process being killed while committing it.
    func testAKVCacheLargerThanTheMachineIsRefused() throws {
        let physical = ProcessInfo.processInfo.physicalMemory
        let asked = Int(physical) + (1 << 30)
        XCTAssertThrowsError(try makeCore { $0.kvCacheBytes = asked }) {
            XCTAssertEqual($0 as? EngineError, .invalidConfiguration(
                "a KV cache of \(asked >> 20) MiB does not fit in this machine's \(physical >> 20) MiB of memory"))
        }
    }

    /// Without a configured context, a sequence may be as long as both the model's trained
    /// context and the pool allow: SmolLM2 declares 8,192 positions, a 64-block pool of 16
    /// holds 1,024.
    func testTheDefaultContextIsWhatThePoolAndTheModelAllow() throws {
        let (model, tokenizer) = try load()
        XCTAssertEqual(model.trainedContextLength, 8192)
        var small = EngineConfiguration()
        small.kvCacheBytes = 64 * 16 * model.kvBytesPerPosition
        XCTAssertEqual(try EngineCore(model: model, tokenizer: tokenizer, configuration: small).contextLength, 1024)
        var large = EngineConfiguration()
        large.kvCacheBytes = 1024 * 16 * model.kvBytesPerPosition
        XCTAssertEqual(try EngineCore(model: model, tokenizer: tokenizer, configuration: large).contextLength, 8192)
        var explicit = small
        explicit.contextLength = 4096
        XCTAssertEqual(try EngineCore(model: model, tokenizer: tokenizer, configuration: explicit).contextLength, 4096,
                       "an explicit --context is kept; requests past the pool are then refused with both sizes")
    }

    /// Runs requests to completion on a core, stepping it directly; returns each request's
    /// outputs by sample index, and the statistics seen after every step.
    struct Finished {
        var tokens: [[Int]]
        var texts: [String]
        var reasons: [FinishReason?]
        var metrics: RequestMetrics?
    }

    func run(_ requests: [GenerationRequest], on core: EngineCore, afterStep: (EngineStatistics) -> Void = { _ in }) throws -> [Finished] {
        var results = requests.map { Finished(tokens: Array(repeating: [], count: $0.samples), texts: Array(repeating: "", count: $0.samples),
                                              reasons: Array(repeating: nil, count: $0.samples), metrics: nil) }
        for (i, r) in requests.enumerated() { try core.add(id: UInt64(i), r) }
        var steps = 0
        while core.hasWork {
            for event in try core.step() {
                let i = Int(event.request), o = event.output
                XCTAssertNil(results[i].reasons[o.index], "output after the finish of request \(i) sample \(o.index)")
                results[i].tokens[o.index] += o.tokens
                results[i].texts[o.index] += o.text
                results[i].reasons[o.index] = o.finishReason
                if event.finished { results[i].metrics = o.metrics }
            }
            afterStep(core.currentStatistics())
            steps += 1
            XCTAssertLessThan(steps, 100_000, "the engine does not converge")
        }
        return results
    }

    func goldenRequests(maxTokens: Int) throws -> [GenerationRequest] {
        try TestSupport.jsonLines("greedy.jsonl").map {
            var p = GenerationParameters()
            p.sampling = .greedy
            p.maxTokens = maxTokens
            return GenerationRequest(prompt: $0["prompt_ids"] as! [Int], parameters: p)
        }
    }

    /// Random prompts and sampling settings, reproducible from `seed`.
    func randomRequests(_ count: Int, seed: UInt64, maxPrompt: Int = 120, maxTokens: Int = 24) -> [GenerationRequest] {
        var g = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            let length = Int.random(in: 1...maxPrompt, using: &g)
            var p = GenerationParameters()
            p.maxTokens = Int.random(in: 1...maxTokens, using: &g)
            p.sampling.temperature = [0, 0.7, 1.2].randomElement(using: &g)!
            p.sampling.seed = g.next()
            p.ignoreEndOfGeneration = Bool.random(using: &g)
            return GenerationRequest(prompt: (0..<length).map { _ in Int.random(in: 2..<49152, using: &g) }, parameters: p)
        }
    }

    /// Each request's greedy tokens run alone on a fresh core, checked against the
    /// single-stream generator's.
    func tokensAlone(_ requests: [GenerationRequest], model: any LanguageModel, tokenizer: Tokenizer,
                     core: () throws -> EngineCore) throws -> [[Int]] {
        let generator = Generator(model: model, tokenizer: tokenizer, contextLength: 2048)
        return try requests.map { r in
            let single = try run([r], on: try core())[0].tokens[0]
            XCTAssertEqual(single, try generator.generate(prompt: r.prompt, parameters: r.parameters).tokens, "engine alone vs generator")
            return single
        }
    }

    /// The first requests of `results` got the tokens they got alone.
    func checkTokens(_ name: String, _ results: [Finished], _ alone: [[Int]]) {
        for (i, expected) in alone.enumerated() { XCTAssertEqual(results[i].tokens[0], expected, "\(name): golden prompt \(i)") }
    }

    /// The batch-invariance promise: a golden prompt's greedy tokens are the same alone (and
    /// equal to the single-stream generator's), all together, among 30 random requests,
    /// without the prefix cache, with a 16-token budget, and under preemption.
    func testGoldenPromptsGiveTheSameTokensWhateverSharesTheBatch() throws {
        let maxTokens = 24
        let golden = try goldenRequests(maxTokens: maxTokens)
        let (model, tokenizer) = try load()
        let alone = try tokensAlone(golden, model: model, tokenizer: tokenizer) { try makeCore() }
        func check(_ name: String, _ results: [Finished]) { checkTokens(name, results, alone) }
        check("together", try run(golden, on: try makeCore()))
        check("mixed", try run(golden + randomRequests(30, seed: 1), on: try makeCore()))
        check("no prefix cache", try run(golden + randomRequests(10, seed: 2), on: try makeCore { $0.prefixCaching = false }))
        check("budget 16", try run(golden + randomRequests(10, seed: 3), on: try makeCore { $0.tokenBudget = 16 }))

        // Room for a little more than the longest request alone: sequences must take turns.
        let core = try makeCore { $0.kvCacheBytes = 6 * 16 * model.kvBytesPerPosition; $0.blockSize = 16 }
        check("preempted", try run(golden + randomRequests(6, seed: 4, maxPrompt: 40), on: core))
        XCTAssertGreaterThan(core.currentStatistics().preemptions, 0, "the small cache forced preemption")
        XCTAssertEqual(core.currentStatistics().kvBlocksUsed, 0)
    }

    /// For a cache that stages keys: the golden prompts' tokens alone (returned), among
    /// random requests and from the prefix cache, with no block left open afterwards; and
    /// parallel samples of a prompt of 3 blocks and 5 positions, which share its open block
    /// until they copy it, each as it is alone.
    func checkStagedKeys(_ golden: [GenerationRequest], model: any LanguageModel, tokenizer: Tokenizer,
                         core: () throws -> EngineCore) throws -> [[Int]] {
        let alone = try tokensAlone(golden, model: model, tokenizer: tokenizer) { try core() }
        let shared = try core()
        checkTokens("mixed", try run(golden + randomRequests(12, seed: 1), on: shared), alone)
        checkTokens("prefix cache hits", try run(golden, on: shared), alone)
        XCTAssertGreaterThan(shared.currentStatistics().promptTokensCached, 0)
        XCTAssertEqual(shared.cache.openBlocks, 0, "no block keeps staged keys once its holders are done")

        var samples = GenerationRequest(prompt: Array(golden[0].prompt.prefix(10)) + (0..<43).map { 100 + 7 * $0 }, parameters: golden[0].parameters)
        samples.samples = 3
        samples.parameters.sampling.temperature = 0.9
        samples.parameters.sampling.seed = 7
        let forked = try run([samples], on: try core())[0]
        for i in 0..<3 {
            var one = samples
            one.samples = 1
            one.parameters.sampling.seed = 7 + UInt64(i)
            XCTAssertEqual(forked.tokens[i], try run([one], on: try core())[0].tokens[0], "sample \(i)")
        }
        XCTAssertEqual(Set(forked.tokens).count, 3, "different seeds, different samples")
        return alone
    }

    /// kivi4 keys keep the promise too: sealed blocks are read the same whatever shares the
    /// pass, through the prefix cache, copy-on-write of parallel samples and recomputation
    /// after preemption; every block's staged keys are freed once the requests are done.
    /// Draft models and token trees are refused.
    func testKIVIKeysGiveTheSameTokensWhateverSharesTheBatch() throws {
        let golden = try goldenRequests(maxTokens: 20)
        let tokenizer = try load().tokenizer
        let model = try ModelRegistry.load(try TestSupport.model(), options: ModelOptions(kvType: KVCacheType(keys: .kivi4, values: .q4_0)))
        func core(_ configure: (inout EngineConfiguration) -> Void = { _ in }) throws -> EngineCore {
            var c = EngineConfiguration()
            c.contextLength = 2048
            configure(&c)
            return try EngineCore(model: model, tokenizer: tokenizer, configuration: c)
        }
        XCTAssertThrowsError(try core { $0.speculation.mode = .ngram; $0.speculation.treeWidth = 2 }) {
            XCTAssertEqual($0 as? EngineError, .invalidConfiguration(
                "draft models and token trees are not supported with kivi4 keys: use --speculative ngram with --draft-tree-width 1, or off, or another key type"))
        }
        XCTAssertThrowsError(try core { $0.blockSize = 8 }) {
            XCTAssertEqual($0 as? EngineError, .invalidConfiguration("kivi4 keys are quantized 16 positions at a time: the block size must be 16, got 8"))
        }
        XCTAssertNotNil(try core { $0.speculation.mode = .ngram }.speculator, "the command line's default, a prompt-lookup chain, speculates")
        var export = golden[0]
        export.exportsKV = true
        XCTAssertThrowsError(try core().validate(export)) { XCTAssertEqual($0 as? EngineError, .kvTransferUnsupported) }
        XCTAssertThrowsError(try core().importBlocks([])) { XCTAssertEqual($0 as? EngineError, .kvTransferUnsupported) }

        let alone = try checkStagedKeys(golden, model: model, tokenizer: tokenizer) { try core() }
        func check(_ name: String, _ results: [Finished]) { checkTokens(name, results, alone) }

        let small = try core { $0.kvCacheBytes = 6 * 16 * model.kvBytesPerPosition }
        check("preempted", try run(golden + randomRequests(6, seed: 4, maxPrompt: 40), on: small))
        XCTAssertGreaterThan(small.currentStatistics().preemptions, 0, "the small cache forced preemption")
        XCTAssertEqual(small.cache.openBlocks, 0)
    }

    /// Sample i of a seeded request with n samples is the request with seed + i alone; the
    /// samples share the prompt's blocks until they diverge (copy-on-write).
    func testParallelSamplesShareThePromptAndMatchSeparateRequests() throws {
        let (_, tokenizer) = try load()
        var p = GenerationParameters()
        p.maxTokens = 20
        p.sampling.seed = 100
        p.sampling.temperature = 1.0
        let prompt = tokenizer.encode("Once upon a time, in a land far away, there lived a", parseSpecial: true)
        var request = GenerationRequest(prompt: prompt, parameters: p)
        request.samples = 4
        let core = try makeCore()
        var peakUsed = 0
        let together = try run([request], on: core) { peakUsed = max(peakUsed, $0.kvBlocksUsed) }[0]
        let promptBlocks = (prompt.count + 15) / 16, perSample = (prompt.count + 20 + 15) / 16
        XCTAssertLessThan(peakUsed, 4 * perSample, "samples share the prompt's full blocks")
        XCTAssertGreaterThanOrEqual(peakUsed, promptBlocks)
        for i in 0..<4 {
            var single = p
            single.sampling.seed = 100 + UInt64(i)
            let alone = try run([GenerationRequest(prompt: prompt, parameters: single)], on: try makeCore())[0]
            XCTAssertEqual(together.tokens[i], alone.tokens[0], "sample \(i)")
            XCTAssertEqual(together.texts[i], alone.texts[0], "sample \(i)")
        }
        XCTAssertEqual(Set(together.tokens).count, 4, "different seeds, different samples")
        XCTAssertEqual(together.metrics?.completionTokens, together.tokens.reduce(0) { $0 + $1.count })
        XCTAssertEqual(core.currentStatistics().kvBlocksUsed, 0)
    }

    /// A 1,000-token system prompt shared by 32 requests is computed once.
    func testSharedSystemPromptIsComputedOnce() throws {
        let (_, tokenizer) = try load()
        var g = SplitMix64(seed: 9)
        let system = (0..<1000).map { _ in Int.random(in: 2..<49152, using: &g) }
        var p = GenerationParameters()
        p.sampling = .greedy
        p.maxTokens = 2
        let requests = (0..<32).map { i in GenerationRequest(prompt: system + tokenizer.encode(" Question \(i): why?"), parameters: p) }
        let core = try makeCore()
        let first = try run([requests[0]], on: core)[0]
        XCTAssertEqual(first.metrics?.cachedPromptTokens, 0)
        let rest = try run(Array(requests[1...]), on: core)
        for (i, r) in rest.enumerated() {
            XCTAssertEqual(r.metrics?.cachedPromptTokens, 992, "request \(i + 1) reuses the 62 full blocks of the system prompt")
        }
        let s = core.currentStatistics()
        XCTAssertEqual(s.promptTokensCached, 31 * 992)
        XCTAssertEqual(s.promptTokensQueried, requests.reduce(0) { $0 + $1.prompt.count })

        let uncached = try makeCore { $0.prefixCaching = false }
        let again = try run(Array(requests[..<2]), on: uncached)
        XCTAssertEqual(again.map { $0.metrics?.cachedPromptTokens }, [0, 0])
        XCTAssertEqual(again[1].tokens, rest[0].tokens, "cached or not, the same tokens")
    }

    /// Requests with one uncached system prompt that arrive together compute it once: the
    /// others wait for its blocks to reach the prefix cache instead of computing them too,
    /// and give the tokens they give alone.
    func testASystemPromptSharedByRequestsArrivingTogetherIsComputedOnce() throws {
        let (_, tokenizer) = try load()
        var g = SplitMix64(seed: 11)
        let system = (0..<1000).map { _ in Int.random(in: 2..<49152, using: &g) }
        var p = GenerationParameters()
        p.sampling = .greedy
        p.maxTokens = 3
        let requests = (0..<8).map { i in GenerationRequest(prompt: system + tokenizer.encode(" Question \(i): why?"), parameters: p) }
        let core = try makeCore()
        let together = try run(requests, on: core)
        let s = core.currentStatistics()
        XCTAssertEqual(s.promptTokensCached, 7 * 992, "seven of the eight reuse the 62 full blocks of the system prompt")
        XCTAssertEqual(s.promptTokensComputed, s.promptTokensQueried - 7 * 992)
        for (i, r) in requests.enumerated() {
            XCTAssertEqual(together[i].tokens, try run([r], on: try makeCore())[0].tokens, "request \(i)")
        }
    }

    func testLogprobsStopStringsAndFinishReasons() throws {

        let (_, tokenizer) = try load()
        var p = GenerationParameters()
        p.sampling = .greedy
        p.maxTokens = 40
        let prompt = tokenizer.encode("The capital of France is", parseSpecial: true)
        var request = GenerationRequest(prompt: prompt, parameters: p)
        request.logprobs = 3
        var stopped = request
        stopped.parameters.stopStrings = ["United"]
        let results = try run([request, stopped], on: try makeCore())
        XCTAssertEqual(Array(results[0].tokens[0].prefix(5)), [7042, 30, 198, 198, 504], "golden greedy continuation")
        XCTAssertEqual(results[0].reasons[0], .length)
        XCTAssertEqual(results[1].texts[0], " Paris.\n\nThe ")
        XCTAssertEqual(results[1].reasons[0], .stop)

        let core = try makeCore()
        try core.add(id: 1, request)
        var logprobs: [TokenLogprobs] = []
        while core.hasWork { for e in try core.step() { logprobs += e.output.logprobs } }
        XCTAssertEqual(logprobs.count, 40)
        for lp in logprobs {
            XCTAssertEqual(lp.top.count, 3)
            XCTAssertEqual(lp.top[0].token, lp.chosen.token, "greedy picks the most likely token")
            XCTAssertEqual(lp.top[0].logprob, lp.chosen.logprob)
            XCTAssertLessThanOrEqual(lp.chosen.logprob, 0)
            XCTAssertGreaterThanOrEqual(lp.top[0].logprob, lp.top[1].logprob)
            XCTAssertGreaterThanOrEqual(lp.top[1].logprob, lp.top[2].logprob)
        }
    }

    /// With room for one sequence at a time, requests run by priority, then first come.
    func testPriorityThenArrivalOrder() throws {
        let core = try makeCore { $0.maxRunningSequences = 1 }
        var p = GenerationParameters()
        p.sampling = .greedy
        p.maxTokens = 2
        p.ignoreEndOfGeneration = true
        for (id, priority) in [(0, 0), (1, 0), (2, -1), (3, 5)] {
            var r = GenerationRequest(prompt: [504, 3575, 282, id % 2 == 0 ? 4649 : 314], parameters: p)
            r.priority = priority
            try core.add(id: UInt64(id), r)
        }
        var order: [UInt64] = []
        while core.hasWork { order += try core.step().filter(\.finished).map(\.request) }
        XCTAssertEqual(order, [2, 0, 1, 3])
    }

    func testRequestsThatCanNeverRunAreClearErrors() throws {
        let (model, _) = try load()
        let core = try makeCore { $0.kvCacheBytes = 4 * 16 * model.kvBytesPerPosition }
        var p = GenerationParameters()
        p.maxTokens = 100
        XCTAssertThrowsError(try core.validate(GenerationRequest(prompt: Array(repeating: 5, count: 10), parameters: p))) {
            XCTAssertEqual($0 as? EngineError, .exceedsKVCache(positions: 110, capacity: 64))
            XCTAssertEqual("\($0)", "the request needs 110 KV-cache positions but the whole cache holds 64; lower max_tokens or give the cache more memory")
        }
        XCTAssertThrowsError(try core.validate(GenerationRequest(prompt: [], parameters: p))) { XCTAssertEqual($0 as? GenerationError, .emptyPrompt) }
        var many = GenerationRequest(prompt: [5], parameters: p)
        many.parameters.maxTokens = 4
        many.samples = 0
        XCTAssertThrowsError(try core.validate(many)) { XCTAssertEqual($0 as? EngineError, .invalidSamples(0)) }
        XCTAssertThrowsError(try core.validate(GenerationRequest(prompt: Array(repeating: 5, count: 2048), parameters: p))) {
            XCTAssertEqual($0 as? GenerationError, .promptTooLong(promptTokens: 2048, contextLength: 2048))
        }
        XCTAssertThrowsError(try core.validate(GenerationRequest(prompt: [49152], parameters: p))) {
            XCTAssertEqual($0 as? ModelError, .tokenOutOfRange(token: 49152, vocabularySize: 49152))
        }
    }

    /// Hundreds of mixed requests through the async API, a fifth of them cancelled midway,
    /// in a cache small enough to preempt: every other request completes exactly once with
    /// all its tokens, and at the end no block is held.
    func testSoakWithCancellations() async throws {
        let (model, tokenizer) = try load()
        var configuration = EngineConfiguration()
        configuration.contextLength = 512
        configuration.kvCacheBytes = 12 * 16 * model.kvBytesPerPosition
        let engine = try Engine(model: model, tokenizer: tokenizer, configuration: configuration)
        defer { engine.shutdown() }
        var requests = randomRequests(240, seed: 5, maxPrompt: 60, maxTokens: 16)
        for i in requests.indices { requests[i].parameters.ignoreEndOfGeneration = true }
        let outcomes = try await withThrowingTaskGroup(of: (Int, Int?, FinishReason?).self) { group in
            var outcomes: [(Int, Int?, FinishReason?)] = []
            for (i, r) in requests.enumerated() {
                if i >= 32 { outcomes.append(try await group.next()!) }
                group.addTask {
                    var tokens = 0
                    var reason: FinishReason?
                    var outputs = 0
                    for try await o in engine.generate(r) {
                        tokens += o.tokens.count
                        reason = o.finishReason
                        outputs += 1
                        if i % 5 == 0 && outputs == 2 { return (i, nil, nil) }  // the consumer walks away
                    }
                    return (i, tokens, reason)
                }
            }
            for try await o in group { outcomes.append(o) }
            return outcomes
        }
        XCTAssertEqual(outcomes.count, requests.count)
        XCTAssertEqual(Set(outcomes.map(\.0)).count, requests.count, "every request answered once")
        for (i, tokens, reason) in outcomes where tokens != nil {
            XCTAssertEqual(tokens, requests[i].parameters.maxTokens, "request \(i)")
            XCTAssertEqual(reason, .length, "request \(i)")
        }
        // Aborts reach the loop asynchronously; give it time to process the last ones.
        func settled() -> Bool {
            let s = engine.statistics
            return s.kvBlocksUsed == 0 && s.runningSequences + s.waitingSequences == 0 && s.finishedRequests + s.abortedRequests == requests.count
        }
        for _ in 0..<1000 where !settled() { try await Task.sleep(nanoseconds: 10_000_000) }
        let s = engine.statistics
        XCTAssertEqual(s.kvBlocksUsed, 0)
        XCTAssertEqual(s.runningSequences + s.waitingSequences, 0)
        XCTAssertEqual(s.kvBlocksTotal, 12)
        XCTAssertGreaterThan(s.preemptions, 0)
        XCTAssertEqual(s.finishedRequests + s.abortedRequests, requests.count)
    }
}
