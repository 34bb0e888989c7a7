@testable import Engine
import Foundation
import GGUF
import Kernels
import Models
import TestSupport
import Tokenizer
import XCTest

/// Speculative decoding is lossless: greedy output is token for token what plain decoding
/// gives (the batch-invariant kernels make a drafted position's logits bitwise those of a
/// plain step), and sampled output is distributed as the target model's.
final class SpeculativeDecodingTests: XCTestCase {
    nonisolated(unsafe) static var models: [TestModel: (model: any LanguageModel, tokenizer: Tokenizer)] = [:]

    func load(_ m: TestModel) throws -> (model: any LanguageModel, tokenizer: Tokenizer) {
        if let loaded = Self.models[m] { return loaded }
        let file = try TestSupport.model(m)
        let loaded = (try ModelRegistry.load(file), try Tokenizer(file: file))
        Self.models[m] = loaded
        return loaded
    }

    func core(_ model: any LanguageModel, _ tokenizer: Tokenizer, _ mode: SpeculationConfiguration.Mode, adaptive: Bool = false,
              draft: DraftModel? = nil, configure: (inout EngineConfiguration) -> Void = { _ in }) throws -> EngineCore {
        var c = EngineConfiguration()
        c.contextLength = 1024
        c.kvCacheBytes = 2048 * model.kvBytesPerPosition
        c.speculation.mode = mode
        c.speculation.maxDraft = 8
        c.speculation.adaptive = adaptive
        configure(&c)
        return try EngineCore(model: model, tokenizer: tokenizer, configuration: c, draftModel: draft)
    }

    /// Runs requests to completion; returns each one's generated tokens (sample 0).
    func run(_ requests: [GenerationRequest], on core: EngineCore) throws -> [[Int]] {
        var tokens = [[Int]](repeating: [], count: requests.count)
        for (i, r) in requests.enumerated() { try core.add(id: UInt64(i), r) }
        var steps = 0
        while core.hasWork {
            for event in try core.step() where event.output.index == 0 { tokens[Int(event.request)] += event.output.tokens }
            steps += 1
            XCTAssertLessThan(steps, 100_000, "the engine does not converge")
        }
        XCTAssertEqual(core.currentStatistics().kvBlocksUsed, 0, "every block is released")
        return tokens
    }

    func goldenRequests(_ m: TestModel) throws -> [GenerationRequest] {
        try TestSupport.jsonLines("greedy.jsonl", model: m).map {
            var p = GenerationParameters()
            p.sampling = .greedy
            p.maxTokens = 64
            return GenerationRequest(prompt: $0["prompt_ids"] as! [Int], parameters: p)
        }
    }

    /// Every golden prompt of every model: greedy tokens with prompt lookup (always drafting
    /// eight where a match exists, and adaptive) are the tokens without it, alone and
    /// sharing the batch with sampled requests.
    func testGreedyOutputIsIdenticalWithPromptLookup() throws {
        for m in [TestModel.smolLM2, .qwen05, .gemma3] {
            let (model, tokenizer) = try load(m)
            let golden = try goldenRequests(m)
            let plain = try run(golden, on: try core(model, tokenizer, .off))
            let forced = try core(model, tokenizer, .ngram)
            XCTAssertEqual(try run(golden, on: forced), plain, "\(m.catalogName): prompt lookup, drafting 8")
            let s = forced.currentStatistics()
            XCTAssertGreaterThan(s.draftTokens, 100, "\(m.catalogName): drafts were verified")
            XCTAssertGreaterThan(s.acceptedDraftTokens, 10, "\(m.catalogName): some drafts were kept")
            XCTAssertLessThan(s.acceptedDraftTokens, s.draftTokens)
            XCTAssertEqual(try run(golden, on: try core(model, tokenizer, .ngram, adaptive: true)), plain, "\(m.catalogName): adaptive")
            let mixed = golden + sampledRequests(8, seed: 5)
            XCTAssertEqual(Array(try run(mixed, on: try core(model, tokenizer, .ngram) { $0.speculation.speculatesSeededSampling = true }).prefix(golden.count)), plain,
                           "\(m.catalogName): among sampled requests")
        }
    }

    /// kivi4 keys: a rejected draft may have filled and sealed a block, which the next pass
    /// writes again and seals anew before any query reads it sealed; greedy output with
    /// prompt lookup is still plain decoding's, and no block keeps staged keys afterwards.
    func testGreedyOutputIsIdenticalWithPromptLookupOnKIVIKeys() throws {
        for m in [TestModel.smolLM2, .qwen05] {
            let tokenizer = try load(m).tokenizer
            let model = try ModelRegistry.load(try TestSupport.model(m), options: ModelOptions(kvType: KVCacheType(keys: .kivi4, values: .q4_0)))
            let golden = try goldenRequests(m)
            let plain = try run(golden, on: try core(model, tokenizer, .off))
            let forced = try core(model, tokenizer, .ngram) { $0.speculation.maxDraft = 16 }
            XCTAssertEqual(try run(golden, on: forced), plain, "\(m.catalogName): prompt lookup, drafting 16")
            let s = forced.currentStatistics()
            XCTAssertGreaterThan(s.draftTokens, 100, "\(m.catalogName): drafts were verified")
            XCTAssertLessThan(s.acceptedDraftTokens, s.draftTokens, "\(m.catalogName): some drafts were rejected")
            XCTAssertEqual(forced.cache.openBlocks, 0)
        }
    }

    /// Token trees: prompt lookup drafting the chain and up to three branches off it, eight
    /// tokens each. Greedy output is plain decoding's on every golden prompt, also when a
    /// small cache preempts sequences with branches in flight, and walks do leave the chain
    /// (a branch's keys and values, shared tokens included, are then the sequence's).
    func testGreedyOutputIsIdenticalWithTokenTrees() throws {
        var branchTokens = 0
        for m in [TestModel.smolLM2, .qwen05, .gemma3] {
            let (model, tokenizer) = try load(m)
            let golden = try goldenRequests(m)
            let plain = try run(golden, on: try core(model, tokenizer, .off))
            let tree = try core(model, tokenizer, .ngram) { $0.speculation.treeWidth = 4 }
            XCTAssertEqual(try run(golden, on: tree), plain, "\(m.catalogName): token trees")
            branchTokens += tree.currentStatistics().acceptedBranchTokens
            if m == .smolLM2 {
                let small = try core(model, tokenizer, .ngram) {
                    $0.speculation.treeWidth = 4
                    $0.kvCacheBytes = 8 * 16 * model.kvBytesPerPosition
                }
                XCTAssertEqual(try run(golden, on: small), plain, "\(m.catalogName): token trees, preempted")
                XCTAssertGreaterThan(small.currentStatistics().preemptions, 0)
            }
        }
        XCTAssertGreaterThan(branchTokens, 0, "some accepted tokens came from branches")
    }

    /// The chain follows the most recent earlier occurrence of the longest matching suffix;
    /// branches follow the next occurrences where they leave it at a new place or with a new token.
    func testPromptLookupDraftsATree() {
        //             0  1  2  3  4  5  6  7  8  9 10 11 12
        let tokens = [1, 2, 3, 1, 2, 4, 5, 1, 2, 3, 6, 1, 2]
        let tree = PromptLookup.lookup(tokens, maxMatch: 8, minMatch: 2, limit: 4, width: 3)
        XCTAssertEqual(tree.tokens, [3, 6, 1, 2])
        XCTAssertEqual(tree.branches, [Draft.Branch(after: 0, tokens: [4, 5, 1, 2]), Draft.Branch(after: 1, tokens: [1, 2, 4])])
        XCTAssertEqual(tree.count, 11)
        XCTAssertEqual(PromptLookup.lookup(tokens, maxMatch: 8, minMatch: 2, limit: 4, width: 2).branches, [Draft.Branch(after: 0, tokens: [4, 5, 1, 2])])
        let chain = PromptLookup.lookup(tokens, maxMatch: 8, minMatch: 2, limit: 4)
        XCTAssertEqual(chain.tokens, [3, 6, 1, 2])
        XCTAssertEqual(chain.branches, [])
        XCTAssertEqual(tree.prefix(0).branches, [Draft.Branch(after: 0, tokens: [4, 5, 1, 2])], "a branch that leaves before the cut stays")
        // The same place and token as an earlier branch: not a new branch.
        XCTAssertEqual(PromptLookup.lookup([7, 1, 2, 4, 7, 1, 2, 4, 7, 1, 2, 3, 7, 1, 2], maxMatch: 2, minMatch: 2, limit: 2, width: 4).branches,
                       [Draft.Branch(after: 0, tokens: [4, 7])])
    }

    /// The copy's draft after following `output` written after `prompt` (Qwen2.5's tokens;
    /// each text ends where the source's tokens do, as a model's output would).
    private func copyDraft(_ prompt: String, _ output: String, limit: Int = 12) throws -> (draft: String, track: CopyTrack) {
        let tokenizer = try Tokenizer(file: TestSupport.model(.qwen05))
        let p = tokenizer.encode(prompt, addSpecial: false), o = tokenizer.encode(output, addSpecial: false)
        var track = CopyTrack(tokenizer: tokenizer, promptCount: p.count, maxMatch: 8, minMatch: 2)
        let draft = (p + o).withUnsafeBufferPointer { t in
            track.follow(t)
            return track.draft(t, limit: limit)
        }
        return (tokenizer.decode(draft), track)
    }

    static let module = """
        Rename fetchUser to loadAccount and userId to accountId:
        ```javascript
        const cache = new Map();
        const remote = "https://example.invalid/api";

        async function fetchUser(userId) {
          return cache.get(userId) ?? fetchRemote(userId);
        }

        function forget(userId) {
          cache.delete(userId);
        }
        ```
        """
    static let copied = """
        ```javascript
        const cache = new Map();
        const remote = "https://example.invalid/api";


        """

    /// Renames are learned as words from the first edited place (`fetchUser(userId` was
    /// written `loadAccount(accountId`, in other tokens), and drafted wherever the words
    /// recur, inside other tokens too (`(userId`).
    func testCopyTrackDraftsLearnedRenames() throws {
        let (draft, track) = try copyDraft(Self.module, Self.copied + "async function loadAccount(accountId) {\n  return cache.get")
        XCTAssertEqual(track.renames.map { String(decoding: $0.old, as: UTF8.self) + " → " + String(decoding: $0.new, as: UTF8.self) },
                       ["fetchUser → loadAccount", "userId → accountId"])
        XCTAssertTrue(draft.hasPrefix("(accountId) ?? fetchRemote(accountId);\n}"), draft)
        // Midway through the first edit, the copy resumes after as many tokens as were
        // written since, or after the source token the last token ends.
        XCTAssertTrue(try copyDraft(Self.module, Self.copied + "async function loadAccount").draft.hasPrefix("(userId) {\n"))
        XCTAssertTrue(try copyDraft(Self.module, Self.copied + "async function loadAccount(accountId").draft.hasPrefix(") {\n  return"))
    }

    /// A rename the copy writes unchanged somewhere is forgotten; a short copy that ends is
    /// no edit (free text repeats a few words by chance).
    func testCopyTrackForgetsRenamesAndShortCopies() throws {
        let unchanged = try copyDraft(Self.module, Self.copied + "async function loadAccount(accountId) {\n  return cache.get(userId) ?? fetchRemote")
        XCTAssertEqual(unchanged.track.renames.map { String(decoding: $0.old, as: UTF8.self) }, ["fetchUser"])
        XCTAssertTrue(unchanged.draft.hasPrefix("(userId);\n}"), unchanged.draft)
        let story = "The old lighthouse keeper climbed the stairs every night at dusk."
        let chance = try copyDraft(story, " He said the old lighthouse was", limit: 4)
        XCTAssertEqual(chance.track.renames, [])
        XCTAssertEqual(chance.draft, "")
    }

    /// Whatever the tokens, following and drafting never fail, and a draft keeps to its
    /// limit. The tokens come from a few words and separators (and a control token, whose
    /// text is empty), mostly copied from earlier runs with tokens changed now and then, so
    /// that copies, departures, resumptions and renames all happen.
    func testCopyTrackFollowsAnyTokens() throws {
        let tokenizer = try Tokenizer(file: TestSupport.model(.qwen05))
        var alphabet = tokenizer.encode(" user userId(userId fetchUser loadAccount accountId(accountId ( ) ; . ,\n", addSpecial: false)
        alphabet += tokenizer.vocabulary.endOfGeneration.prefix(1)
        var g = SplitMix64(seed: 7)
        var drafts = 0, renamed = 0
        for _ in 0..<300 {
            let promptCount = Int.random(in: 0...30, using: &g)
            var tokens = (0..<promptCount).map { _ in alphabet.randomElement(using: &g)! }
            var track = CopyTrack(tokenizer: tokenizer, promptCount: promptCount, maxMatch: 8, minMatch: 2)
            var copyFrom: Int?
            for _ in 0..<Int.random(in: 1...150, using: &g) {
                if let c = copyFrom, c < tokens.count, Int.random(in: 0..<10, using: &g) > 0 {
                    tokens.append(tokens[c])
                    copyFrom = c + 1
                } else {
                    tokens.append(alphabet.randomElement(using: &g)!)
                    copyFrom = tokens.isEmpty || Bool.random(using: &g) ? copyFrom.map { $0 + 1 } : Int.random(in: 0..<tokens.count, using: &g)
                }
                guard Int.random(in: 0..<3, using: &g) == 0 else { continue }
                let limit = Int.random(in: 1...16, using: &g)
                let draft = tokens.withUnsafeBufferPointer { t in
                    track.follow(t)
                    return track.draft(t, limit: limit)
                }
                XCTAssertLessThanOrEqual(draft.count, limit)
                drafts += draft.isEmpty ? 0 : 1
                renamed += track.renames.isEmpty ? 0 : 1
            }
        }
        XCTAssertGreaterThan(drafts, 100, "copies were followed")
        XCTAssertGreaterThan(renamed, 10, "renames were learned")
    }

    /// A draft model drafting for itself: greedy drafts are exactly the target's choices, so
    /// every drafted token is kept, and the output is plain decoding's. A small cache makes
    /// sequences wait and be preempted with drafts in flight.
    func testGreedyOutputIsIdenticalWithADraftModel() throws {
        let (model, tokenizer) = try load(.smolLM2)
        let golden = try goldenRequests(.smolLM2)
        let plain = try run(golden, on: try core(model, tokenizer, .off))
        let draft = DraftModel(model: model, tokenizer: tokenizer)
        let engine = try core(model, tokenizer, .draft, draft: draft)
        XCTAssertEqual(try run(golden, on: engine), plain)
        let s = engine.currentStatistics()
        XCTAssertGreaterThan(s.draftTokens, 200)
        XCTAssertEqual(s.acceptedDraftTokens, s.draftTokens, "the model agrees with itself")

        let small = try core(model, tokenizer, .draft, draft: draft) { $0.kvCacheBytes = 8 * 16 * model.kvBytesPerPosition }
        XCTAssertEqual(try run(golden, on: small), plain, "preempted")
        XCTAssertGreaterThan(small.currentStatistics().preemptions, 0)
    }

    func testADraftModelWithAnotherVocabularyIsRefused() throws {
        let (model, tokenizer) = try load(.smolLM2)
        let other = try SyntheticModel.file("llama")
        let draft = DraftModel(model: try ModelRegistry.load(other), tokenizer: try Tokenizer(file: other))
        XCTAssertThrowsError(try core(model, tokenizer, .draft, draft: draft)) {
            XCTAssertEqual("\($0)", "the draft model's vocabulary (259 tokens, 259 logits) is not the model's (49152 tokens, 49152 logits)")
        }
        XCTAssertThrowsError(try core(model, tokenizer, .draft)) {
            XCTAssertEqual("\($0)", "speculative decoding with a draft model needs a draft model")
        }
    }

    /// Speculative sampling keeps the target's distribution whatever the draft's: a
    /// chi-square test over 40,000 verifications of a draft from q against p, for a
    /// deterministic draft and a sampled one. Keeping every draft instead fails it.
    func testSpeculativeSamplingHasTheTargetDistribution() throws {
        let p: [(token: Int, probability: Float)] = [(0, 0.4), (1, 0.25), (2, 0.15), (3, 0.1), (4, 0.06), (5, 0.04)]
        let q: [Int: Float] = [0: 0.1, 1: 0.5, 2: 0.05, 3: 0.05, 4: 0.3]  // token 5 never drafted
        var sampling = SamplingParameters()
        sampling.seed = 42
        var sampler = try Sampler(sampling)
        let n = 40_000
        var sampled = [Int](repeating: 0, count: 6), fixed = [Int](repeating: 0, count: 6), naive = [Int](repeating: 0, count: 6)
        var drafts = SplitMix64(seed: 7)
        for _ in 0..<n {
            // A draft drawn from q.
            var u = Float(Double(drafts.next() >> 11) / Double(1 << 53)), d = 4
            for t in 0..<5 { u -= q[t]!; if u < 0 { d = t; break } }
            sampled[SpeculativeSampling.verify(draft: d, draftProbabilities: q, target: p, sampler: &sampler).token] += 1
            naive[d] += 1
            fixed[SpeculativeSampling.verify(draft: 1, draftProbabilities: nil, target: p, sampler: &sampler).token] += 1
        }
        func chiSquare(_ counts: [Int]) -> Double {
            zip(counts, p).reduce(0) { sum, cell in
                let expected = Double(n) * Double(cell.1.probability)
                return sum + (Double(cell.0) - expected) * (Double(cell.0) - expected) / expected
            }
        }
        // Five degrees of freedom: 20.5 is the 0.001 critical value.
        XCTAssertLessThan(chiSquare(sampled), 20.5, "sampled draft: \(sampled)")
        XCTAssertLessThan(chiSquare(fixed), 20.5, "deterministic draft: \(fixed)")
        XCTAssertGreaterThan(chiSquare(naive), 1000, "keeping every draft has the draft's distribution: \(naive)")
    }

    /// The same through the whole engine: a tiny model samples its second token with a
    /// different tiny model drafting; over 3,000 seeds its distribution is the target's own
    /// (computed exactly from the target's logits), not the draft's.
    func testSampledOutputThroughTheEngineHasTheTargetDistribution() throws {
        let targetFile = try SyntheticModel.file("llama", seed: 1), draftFile = try SyntheticModel.file("llama", seed: 2)
        let target = try ModelRegistry.load(targetFile), tokenizer = try Tokenizer(file: targetFile)
        let draft = DraftModel(model: try ModelRegistry.load(draftFile), tokenizer: try Tokenizer(file: draftFile))
        let prompt = [1, 80, 100, 120, 140]
        var sampling = SamplingParameters()
        sampling.temperature = 1.5
        sampling.topK = 0
        sampling.topP = 1
        sampling.minP = 0

        // The exact distribution of the second token: Σ_t1 p(t1) p(t2 | t1).
        let v = target.vocabularySize
        func probabilities(_ tokens: [Int]) throws -> [Double] {
            let cache = target.makeCache(capacity: 16)
            let logits = try target.forward(tokens, cache: cache, logitRows: (tokens.count - 1)..<tokens.count)
            var s = try Sampler(sampling)
            var p = [Double](repeating: 0, count: v)
            for (t, prob) in s.distribution(logits, history: tokens) { p[t] = Double(prob) }
            return p
        }
        let first = try probabilities(prompt)
        var second = [Double](repeating: 0, count: v)
        for t1 in 0..<v where first[t1] > 1e-7 {
            for (t2, p) in try probabilities(prompt + [t1]).enumerated() { second[t2] += first[t1] * p }
        }

        let n = 3000
        var requests: [GenerationRequest] = []
        for i in 0..<n {
            var p = GenerationParameters()
            p.maxTokens = 3  // the second token is verified against a one-token draft
            p.ignoreEndOfGeneration = true
            p.sampling = sampling
            p.sampling.seed = UInt64(i)
            requests.append(GenerationRequest(prompt: prompt, parameters: p))
        }
        let engine = try core(target, tokenizer, .draft, draft: draft) {
            $0.maxRunningSequences = 64
            $0.speculation.speculatesSeededSampling = true  // seeds make the test repeatable
        }
        let outputs = try run(requests, on: engine)
        XCTAssertEqual(engine.currentStatistics().draftTokens, n, "one drafted token per request")
        let kept = engine.currentStatistics().acceptedDraftTokens
        XCTAssertTrue((n / 20..<n * 19 / 20).contains(kept), "some drafts kept, some replaced: \(kept) of \(n)")
        var counts = [Int](repeating: 0, count: v)
        for o in outputs { counts[o[1]] += 1 }
        // Cells expected to hold fewer than 5 are pooled, as a chi-square test needs.
        var statistic = 0.0, cells = 0, pooledCount = 0, pooledExpected = 0.0
        for t in 0..<v {
            let expected = second[t] * Double(n)
            if expected < 5 { pooledCount += counts[t]; pooledExpected += expected; continue }
            statistic += (Double(counts[t]) - expected) * (Double(counts[t]) - expected) / expected
            cells += 1
        }
        if pooledExpected > 0 {
            statistic += (Double(pooledCount) - pooledExpected) * (Double(pooledCount) - pooledExpected) / pooledExpected
            cells += 1
        }
        // The 0.001 critical value for k degrees of freedom, by Wilson–Hilferty.
        let k = Double(cells - 1), z = 3.09
        let critical = k * pow(1 - 2 / (9 * k) + z * (2 / (9 * k)).squareRoot(), 3)
        XCTAssertGreaterThan(cells, 10)
        XCTAssertLessThan(statistic, critical, "chi-square over \(cells) cells")
    }

    /// Drafts take only what prompts and decodes leave: a prompt arriving while a sequence
    /// drafts at every step is computed in as many steps as without speculation.
    func testDraftsNeverDelayAPrompt() throws {
        let (model, tokenizer) = try load(.smolLM2)
        let engine = try core(model, tokenizer, .ngram) { $0.tokenBudget = 16 }
        var p = GenerationParameters()
        p.sampling = .greedy
        p.maxTokens = 200
        p.ignoreEndOfGeneration = true
        try engine.add(id: 0, GenerationRequest(prompt: Array(repeating: [504, 3260, 314, 1326], count: 6).joined().map { $0 }, parameters: p))
        while engine.scheduler.running.first?.generatedCount ?? 0 < 3 { _ = try engine.step() }
        p.maxTokens = 4
        try engine.add(id: 1, GenerationRequest(prompt: Array(1000..<1045), parameters: p))
        var steps = 0, drafted = 0
        while true {
            let before = engine.currentStatistics().draftTokens
            let events = try engine.step()
            steps += 1
            drafted += engine.currentStatistics().draftTokens - before
            if events.contains(where: { $0.request == 1 }) { break }
            XCTAssertLessThan(steps, 10)
        }
        // 45 prompt tokens at 15 a step (the decode takes one): three steps.
        XCTAssertEqual(steps, 3, "the prompt waited behind drafts")
        XCTAssertEqual(drafted, 0, "no budget was left for drafts while the prompt ran")
    }

    /// A seeded sampled request gives the same tokens with speculation on and off (it is
    /// not speculated; greedy ones are, and agree anyway).
    func testSeededSamplingIsReproducibleWithSpeculationOn() throws {
        let (model, tokenizer) = try load(.smolLM2)
        let requests = sampledRequests(6, seed: 9)
        XCTAssertEqual(try run(requests, on: try core(model, tokenizer, .ngram)), try run(requests, on: try core(model, tokenizer, .off)))
    }

    /// One-position blocks: the draft model's timing pass spans two blocks.
    func testADraftModelStartsWithOnePositionBlocks() throws {
        let file = try SyntheticModel.file("llama")
        let model = try ModelRegistry.load(file), tokenizer = try Tokenizer(file: file)
        let engine = try core(model, tokenizer, .draft, draft: DraftModel(model: model, tokenizer: tokenizer)) { $0.blockSize = 1 }
        var p = GenerationParameters()
        p.sampling = .greedy
        p.maxTokens = 12
        p.ignoreEndOfGeneration = true
        XCTAssertEqual(try run([GenerationRequest(prompt: [1, 50, 60, 70], parameters: p)], on: engine)[0].count, 12)
    }

    /// Sampled requests of random lengths, reproducible from `seed`.
    func sampledRequests(_ count: Int, seed: UInt64) -> [GenerationRequest] {
        var g = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            var p = GenerationParameters()
            p.maxTokens = Int.random(in: 1...40, using: &g)
            p.sampling.temperature = 0.8
            p.sampling.seed = g.next()
            p.ignoreEndOfGeneration = true
            // Repetitive prompts, so that prompt lookup drafts for these too.
            let phrase = (0..<Int.random(in: 2...6, using: &g)).map { _ in Int.random(in: 2..<10000, using: &g) }
            return GenerationRequest(prompt: Array((0..<8).map { _ in phrase }.joined()), parameters: p)
        }
    }
}
