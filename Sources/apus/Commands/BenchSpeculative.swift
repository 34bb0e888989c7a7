import ArgumentParser
import Engine
import Foundation
import Models

struct BenchSpeculative: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "speculative",
        abstract: "Measure speculative decoding: plain decoding against each mode, on copy-heavy and free-text prompts.",
        discussion: """
            Each prompt file is rendered as a user message through the model's chat template and generates \
            --max-tokens greedy tokens (end-of-generation ignored), --repetitions times per mode (off, ngram, and \
            draft when --draft-model is given), --parallel copies at once. The prompt is computed once per mode \
            (later repetitions hit the prefix cache), so tok/s is decode speed, the median over repetitions; \
            `same` says whether the output is token for token plain decoding's. The default prompts are the files \
            in bench/speculative/ of this checkout.
            """)

    @OptionGroup var modelArguments: ModelArguments

    @Option(name: .long, help: "A draft model (path or name) for the draft mode.")
    var draftModel: String?

    @Option(name: .long, help: "Most tokens drafted per sequence and step.")
    var draftMax = 16

    @Flag(name: .long, help: "Draft --draft-max tokens whenever there are that many (no adaptation).")
    var draftFixed = false

    @Option(name: .long, help: "Above 1, also prompt lookup drafting token trees of this many continuations (mode ngram-tree).")
    var draftTreeWidth = 1

    @Option(name: .long, help: "A prompt file (repeatable).")
    var prompt: [String] = []

    @Option(name: .long, help: "Tokens generated per request.")
    var maxTokens = 256

    @Option(name: [.customShort("r"), .customLong("repetitions")], help: "Timed runs per prompt and mode.")
    var repetitions = 3

    @Option(name: .long, help: "Copies of each request generated at once.")
    var parallel = 1

    @Flag(name: .long, help: "Print JSON lines instead of a table.")
    var json = false

    static let defaultPrompts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("bench/speculative")

    struct Row: Encodable {
        let prompt: String
        let mode: String
        let parallel: Int
        let tokens: Int
        let tokens_per_second: Double
        let speedup: Double
        let draft_n: Int
        let draft_n_accepted: Int
        let same_as_plain: Bool
    }

    func validate() throws {
        if maxTokens < 1 || repetitions < 1 || !(1...256).contains(parallel) { throw ValidationError("--max-tokens and --repetitions must be at least 1, --parallel 1 to 256") }
        if !(1...64).contains(draftMax) { throw ValidationError("--draft-max must be between 1 and 64") }
        if !(1...8).contains(draftTreeWidth) { throw ValidationError("--draft-tree-width must be between 1 and 8") }
    }

    func run() async throws {
        try await reportingErrors {
            let loaded = try modelArguments.load(residency: .hugePages)
            let template = try loaded.chatTemplate()
            var files = prompt
            if files.isEmpty {
                files = try FileManager.default.contentsOfDirectory(atPath: Self.defaultPrompts.path).filter { $0.hasSuffix(".txt") }.sorted()
                    .map { Self.defaultPrompts.appendingPathComponent($0).path }
            }
            let prompts = try files.map { path in
                (name: URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent,
                 tokens: loaded.tokenizer.encode(try template.render([(role: "user", content: String(contentsOfFile: path, encoding: .utf8))], tokenizer: loaded.tokenizer),
                                                 parseSpecial: true))
            }
            var draft: DraftModel?
            if let draftModel {
                var arguments = modelArguments
                arguments.model = draftModel
                let d = try arguments.load(residency: .hugePages)
                draft = DraftModel(model: d.model, tokenizer: d.tokenizer)
            }
            var modes: [(name: String, mode: SpeculationConfiguration.Mode, width: Int)] = [("off", .off, 1), ("ngram", .ngram, 1)]
            if draftTreeWidth > 1 { modes.append(("ngram-tree", .ngram, draftTreeWidth)) }
            if draft != nil { modes.append(("draft", .draft, 1)) }
            // One engine per mode, all loaded at once, and the modes taking turns within each
            // repetition: this machine's speed drifts, and turns spread the drift over all.
            let longest = prompts.map(\.tokens.count).max()! + maxTokens + draftMax + 16
            let engines = try modes.map { variant in
                var configuration = EngineConfiguration()
                configuration.contextLength = min(longest, loaded.model.trainedContextLength)
                configuration.kvCacheBytes = (parallel + 1) * longest * loaded.model.kvBytesPerPosition
                configuration.maxRunningSequences = max(parallel, 1)
                configuration.speculation.mode = variant.mode
                configuration.speculation.maxDraft = draftMax
                configuration.speculation.adaptive = !draftFixed
                configuration.speculation.treeWidth = variant.width
                return try Engine(model: loaded.model, tokenizer: loaded.tokenizer, configuration: configuration,
                                  draftModel: variant.mode == .draft ? draft : nil)
            }
            defer { for e in engines { e.shutdown() } }
            var rows: [Row] = []
            for p in prompts {
                var parameters = GenerationParameters()
                parameters.maxTokens = maxTokens
                parameters.sampling = .greedy
                parameters.ignoreEndOfGeneration = true
                let request = GenerationRequest(prompt: p.tokens, parameters: parameters)
                // The prompt once per engine, outside the timing, so that every timed run starts
                // from the prefix cache (the draft model's too: a few tokens, so that it drafts).
                var warm = request
                warm.parameters.maxTokens = 4
                for engine in engines { _ = try await Self.generate(warm, copies: 1, on: engine) }
                var speeds = [[Double]](repeating: [], count: modes.count)
                var drafted = [Int](repeating: 0, count: modes.count), accepted = drafted
                var outputs = [[Int]](repeating: [], count: modes.count)
                for _ in 0..<repetitions {
                    for (m, engine) in engines.enumerated() {
                        let r = try await Self.generate(request, copies: parallel, on: engine)
                        speeds[m].append(r.speed)
                        drafted[m] += r.drafted
                        accepted[m] += r.accepted
                        outputs[m] = r.tokens
                    }
                }
                let medians = speeds.map { $0.sorted()[$0.count / 2] }
                for (m, variant) in modes.enumerated() {
                    let row = Row(prompt: p.name, mode: variant.name, parallel: parallel, tokens: maxTokens, tokens_per_second: medians[m],
                                  speedup: medians[m] / medians[0], draft_n: drafted[m] / repetitions, draft_n_accepted: accepted[m] / repetitions,
                                  same_as_plain: outputs[m] == outputs[0])
                    rows.append(row)
                    if json { writeOut(try jsonLine(row)) }
                }
            }
            guard !json else { return }
            writeOut("model \(loaded.model.architecture), \(modelArguments.threads ?? ModelOptions.defaultThreads) threads, \(maxTokens) greedy tokens, \(parallel) at once, median of \(repetitions)\(draftFixed ? ", fixed drafts of \(draftMax)" : ", adaptive drafts up to \(draftMax)")\n")
            writeOut("| prompt | mode | tok/s | × plain | drafted | accepted | same as plain |\n| --- | --- | ---: | ---: | ---: | ---: | --- |\n")
            for r in rows {
                writeOut("| \(r.prompt) | \(r.mode) | \(String(format: "%.1f", r.tokens_per_second)) | \(String(format: "%.2f", r.speedup)) | \(r.draft_n) | \(r.draft_n_accepted) | \(r.same_as_plain ? "yes" : "NO") |\n")
            }
        }
    }

    /// Runs `copies` copies of a request at once; decode tokens per second over all of them
    /// (from the first token of any to the last token of all), what was drafted and kept,
    /// and copy 0's tokens.
    static func generate(_ request: GenerationRequest, copies: Int, on engine: Engine) async throws -> (speed: Double, drafted: Int, accepted: Int, tokens: [Int]) {
        try await withThrowingTaskGroup(of: (index: Int, tokens: [Int], first: UInt64, last: UInt64, metrics: RequestMetrics?).self) { group in
            for i in 0..<copies {
                group.addTask {
                    var tokens: [Int] = [], metrics: RequestMetrics?, first: UInt64 = 0
                    for try await o in engine.generate(request) {
                        if first == 0 { first = DispatchTime.now().uptimeNanoseconds }
                        tokens += o.tokens
                        if let m = o.metrics { metrics = m }
                    }
                    return (i, tokens, first, DispatchTime.now().uptimeNanoseconds, metrics)
                }
            }
            var first = UInt64.max, last: UInt64 = 0, generated = 0, drafted = 0, accepted = 0, tokens: [Int] = []
            for try await r in group {
                first = min(first, r.first)
                last = max(last, r.last)
                // The first token of each copy comes with the prompt, not from decoding.
                generated += r.tokens.count - 1
                drafted += r.metrics?.draftTokens ?? 0
                accepted += r.metrics?.acceptedDraftTokens ?? 0
                if r.index == 0 { tokens = r.tokens }
            }
            return (Double(generated) / max(Double(last - first) / 1e9, 1e-9), drafted, accepted, tokens)
        }
    }
}
