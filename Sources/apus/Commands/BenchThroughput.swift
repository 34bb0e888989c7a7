import ArgumentParser
import Engine
import Foundation
import Models
import Tokenizer

struct BenchThroughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract: "Measure the serving engine under concurrent requests: output tokens/s, requests/s, latencies.",
        discussion: """
            Sends --requests requests, at most --concurrency at a time, each a prompt of --prompt-tokens random \
            ordinary tokens (after an optional prefix of --shared-prefix-tokens tokens common to all) generating \
            exactly --max-tokens tokens (end-of-generation ignored), greedy. Reports output tokens per second over \
            the whole run, requests per second, and percentiles of time to first token (TTFT) and inter-token \
            latency (ITL). Prompts are drawn fresh from --seed, so reruns do not flatter the prefix cache unless they share a seed.
            """)

    @OptionGroup var modelArguments: ModelArguments
    @OptionGroup var engineArguments: EngineArguments

    @Option(name: .long, help: "Requests to send.")
    var requests = 64

    @Option(name: .long, help: "Most requests in flight at once.")
    var concurrency = 16

    @Option(name: .long, help: "Prompt tokens per request (after the shared prefix).")
    var promptTokens = 128

    @Option(name: .long, help: "Tokens generated per request.")
    var maxTokens = 128

    @Option(name: .long, help: "Tokens of a prefix common to every prompt (a system prompt).")
    var sharedPrefixTokens = 0

    @Option(name: .long, help: "Seed for the random prompts (default: random).")
    var seed: UInt64?

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        if requests < 1 || concurrency < 1 || promptTokens < 1 || maxTokens < 1 || sharedPrefixTokens < 0 {
            throw ValidationError("--requests, --concurrency, --prompt-tokens and --max-tokens must be at least 1; --shared-prefix-tokens at least 0")
        }
    }

    struct Report: Encodable {
        let requests: Int
        let concurrency: Int
        let prompt_tokens: Int
        let shared_prefix_tokens: Int
        let max_tokens: Int
        let threads: Int
        let prefix_cache: Bool
        /// How the KV cache stores keys and values, and how many positions its pool holds.
        let kv_type: String
        let kv_capacity_tokens: Int
        let duration_s: Double
        let output_tokens: Int
        let output_tokens_per_s: Double
        let requests_per_s: Double
        let ttft_ms: Percentiles
        let itl_ms: Percentiles
        let cached_prompt_tokens: Int
        let preemptions: Int
        /// Preempted sequences swapped out (and back) and recomputed, and the predicted
        /// recompute time the swaps saved.
        let swap_outs: Int
        let recomputed_preemptions: Int
        let swap_seconds_saved: Double
        /// Energy of the CPU packages over the run (Linux powercap), null where unreadable.
        let energy_joules: Double?
        let joules_per_token: Double?
        /// Seconds per operation class over the run, with --profile.
        let operation_seconds: [String: Double]?
    }

    struct Percentiles: Encodable {
        let p50: Double
        let p90: Double
        let p99: Double
        let mean: Double

        init(_ values: [Double]) {
            let v = values.sorted()
            func at(_ q: Double) -> Double { v.isEmpty ? 0 : v[min(v.count - 1, Int((q * Double(v.count - 1)).rounded()))] * 1000 }
            p50 = at(0.5)
            p90 = at(0.9)
            p99 = at(0.99)
            mean = v.isEmpty ? 0 : v.reduce(0, +) / Double(v.count) * 1000
        }
    }

    func run() async throws {
        try await reportingErrors {
            let loaded = try modelArguments.load(residency: .hugePages)
            let engine = try Engine(model: loaded.model, tokenizer: loaded.tokenizer, configuration: engineArguments.configuration,
                                    draftModel: try engineArguments.speculation.loadDraft(like: modelArguments, residency: .hugePages))
            defer { engine.shutdown() }
            engine.operationProfile.isEnabled = engineArguments.profile
            let vocabulary = loaded.tokenizer.vocabulary
            let ordinary = (0..<vocabulary.count).filter { vocabulary.types[$0] == .normal }
            var random = SplitMix64(seed: seed ?? UInt64.random(in: .min ... .max))
            let prefix = (0..<sharedPrefixTokens).map { _ in ordinary.randomElement(using: &random)! }
            let prompts = (0..<requests).map { _ in prefix + (0..<promptTokens).map { _ in ordinary.randomElement(using: &random)! } }
            let parameters = {
                var p = GenerationParameters()
                p.sampling = .greedy
                p.maxTokens = maxTokens
                p.ignoreEndOfGeneration = true
                return p
            }()
            for prompt in prompts { try engine.validate(GenerationRequest(prompt: prompt, parameters: parameters)) }

            let meter = EnergyMeter(), energyStart = meter?.read()
            let start = Date()
            let results = try await withThrowingTaskGroup(of: RequestMetrics.self) { group in
                var results: [RequestMetrics] = []
                for (i, prompt) in prompts.enumerated() {
                    if i >= concurrency, let r = try await group.next() { results.append(r) }
                    group.addTask {
                        var metrics: RequestMetrics?
                        for try await o in engine.generate(GenerationRequest(prompt: prompt, parameters: parameters)) where o.metrics != nil {
                            metrics = o.metrics
                        }
                        return metrics!
                    }
                }
                for try await r in group { results.append(r) }
                return results
            }
            let duration = Date().timeIntervalSince(start)
            let outputTokens = results.reduce(0) { $0 + $1.completionTokens }
            let joules = meter.flatMap { m in energyStart.map { m.joules(from: $0, to: m.read()) } }
            let statistics = engine.statistics
            let report = Report(
                requests: requests, concurrency: concurrency, prompt_tokens: promptTokens, shared_prefix_tokens: sharedPrefixTokens,
                max_tokens: maxTokens, threads: modelArguments.threads ?? ModelOptions.defaultThreads, prefix_cache: !engineArguments.noPrefixCache,
                kv_type: modelArguments.kvCache.type.description, kv_capacity_tokens: engine.kvBlockCount * engineArguments.configuration.blockSize, duration_s: duration,
                output_tokens: outputTokens, output_tokens_per_s: Double(outputTokens) / duration, requests_per_s: Double(requests) / duration,
                ttft_ms: Percentiles(results.map(\.timeToFirstTokenSeconds)), itl_ms: Percentiles(results.flatMap(\.interTokenSeconds)),
                cached_prompt_tokens: results.reduce(0) { $0 + $1.cachedPromptTokens }, preemptions: statistics.preemptions,
                swap_outs: statistics.swapOuts, recomputed_preemptions: statistics.recomputedPreemptions, swap_seconds_saved: statistics.swapSecondsSaved,
                energy_joules: joules, joules_per_token: joules.map { $0 / Double(max(outputTokens, 1)) },
                operation_seconds: engineArguments.profile ? Dictionary(uniqueKeysWithValues: engine.operationProfile.snapshot().seconds.map { ($0.key.rawValue, $0.value) }) : nil)
            if json {
                writeOut(try jsonLine(report))
            } else {
                writeOut("""
                    | requests | concurrency | prompt | shared prefix | output | threads | prefix cache | KV type | KV capacity | output tok/s | req/s | TTFT p50/p90/p99 ms | ITL p50/p90/p99 ms | cached prompt tokens |
                    | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |
                    | \(requests) | \(concurrency) | \(promptTokens) | \(sharedPrefixTokens) | \(maxTokens) | \(report.threads) | \(report.prefix_cache ? "on" : "off") \
                    | \(report.kv_type) | \(report.kv_capacity_tokens) \
                    | \(f(report.output_tokens_per_s)) | \(f(report.requests_per_s, 3)) \
                    | \(f(report.ttft_ms.p50)) / \(f(report.ttft_ms.p90)) / \(f(report.ttft_ms.p99)) \
                    | \(f(report.itl_ms.p50)) / \(f(report.itl_ms.p90)) / \(f(report.itl_ms.p99)) | \(report.cached_prompt_tokens) |

                    """)
                if statistics.preemptions > 0 {
                    writeOut(String(format: "preemptions: %d (%d swapped out and back, %d recomputed; the swaps saved %.2f s of predicted recompute)\n",
                                    statistics.preemptions, statistics.swapOuts, statistics.recomputedPreemptions, statistics.swapSecondsSaved))
                }
                writeOut(joules.map { String(format: "energy: %.1f J, %.3f J per output token (%@)\n", $0, $0 / Double(max(outputTokens, 1)), meter!.zoneNames.joined(separator: ", ") as NSString) }
                         ?? "energy: \(EnergyMeter.unavailable())\n")
                if engineArguments.profile { writeOut(OperationTable.render(engine.operationProfile.snapshot(), wall: duration)) }
            }
        }
    }

    private func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
}
