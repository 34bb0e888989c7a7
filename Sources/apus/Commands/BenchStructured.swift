import ArgumentParser
import Engine
import Foundation
import Models
import Tokenizer

struct BenchStructured: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "structured",
        abstract: "Measure constrained decoding: throughput with a JSON schema against the same requests unconstrained.",
        discussion: """
            Sends --requests chat requests (\"Describe <city> as JSON.\", one city each), --concurrency at a time, \
            each generating at most --max-tokens tokens at temperature --temperature, once unconstrained and once \
            under the JSON schema in --schema (default: bench/structured/schema.json of this checkout), alternating, \
            --repetitions times each, after one untimed warm-up of each. Reports output tokens per second (median), \
            the ratio, the share of constrained outputs that validate as JSON objects, and the time spent masking \
            per constrained token.
            """)

    @OptionGroup var modelArguments: ModelArguments
    @OptionGroup var engineArguments: EngineArguments

    @Option(name: .long, help: "A JSON schema file.")
    var schema: String?

    @Option(name: .long, help: "Requests per run.")
    var requests = 32

    @Option(name: .long, help: "Most requests in flight at once.")
    var concurrency = 8

    @Option(name: .long, help: "Most tokens generated per request.")
    var maxTokens = 128

    @Option(name: .long, help: "Sampling temperature (0: greedy).")
    var temperature: Float = 0.7

    @Option(name: [.customShort("r"), .customLong("repetitions")], help: "Timed runs per mode.")
    var repetitions = 3

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    static let defaultSchema = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("bench/structured/schema.json")

    static let cities = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Hanoi", "Denver", "Porto", "Dakar",
                         "Seoul", "Bogota", "Kyiv", "Tunis"]

    struct Report: Encodable {
        let requests: Int
        let concurrency: Int
        let max_tokens: Int
        let threads: Int
        let plain_tokens_per_s: Double
        let constrained_tokens_per_s: Double
        let ratio: Double
        let valid_json: Double
        let mask_us_per_token: Double
        let mask_walks: Int
        let mask_walk_ms: Double
        let mask_build_us_per_token: Double
        let split_masks: Int
        let split_mask_us: Double
        let mask_cached_us_per_token: Double
        let plain_tokens_per_request: Double
        let constrained_tokens_per_request: Double
    }

    func run() async throws {
        try await reportingErrors {
            let loaded = try modelArguments.load(residency: .hugePages)
            let template = try loaded.chatTemplate()
            let schemaText = try String(contentsOf: schema.map { URL(fileURLWithPath: $0) } ?? Self.defaultSchema, encoding: .utf8)
            let engine = try Engine(model: loaded.model, tokenizer: loaded.tokenizer, configuration: engineArguments.configuration)
            defer { engine.shutdown() }
            let prompts = try (0..<requests).map { i in
                let text = try template.render([(role: "user", content: "Describe \(Self.cities[i % Self.cities.count]) as JSON.")], tokenizer: loaded.tokenizer)
                return loaded.tokenizer.encode(text, parseSpecial: true)
            }
            func run(constrained: Bool, count: Int, seed: UInt64) async throws -> (tokens: Int, seconds: Double, valid: Int) {
                var p = GenerationParameters()
                p.maxTokens = maxTokens
                p.sampling.temperature = temperature
                if constrained { p.constraint = .jsonSchema(schemaText) }
                let start = Date()
                let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                    var out: [(Int, String)] = []
                    for (i, prompt) in prompts.prefix(count).enumerated() {
                        if i >= concurrency, let r = try await group.next() { out.append(r) }
                        var q = p
                        q.sampling.seed = seed &+ UInt64(i)
                        let request = GenerationRequest(prompt: prompt, parameters: q)
                        group.addTask {
                            var tokens = 0, text = ""
                            for try await o in engine.generate(request) { tokens += o.tokens.count; text += o.text }
                            return (tokens, text)
                        }
                    }
                    for try await r in group { out.append(r) }
                    return out
                }
                let seconds = Date().timeIntervalSince(start)
                let valid = results.filter { (try? JSONSerialization.jsonObject(with: Data($0.1.utf8))) is [String: Any] }.count
                return (results.reduce(0) { $0 + $1.0 }, seconds, valid)
            }
            _ = try await run(constrained: false, count: concurrency, seed: 99)
            _ = try await run(constrained: true, count: concurrency, seed: 99)
            let maskBefore = engine.statistics
            var plain: [Double] = [], constrained: [Double] = []
            var valid = 0, total = 0, plainTokens = 0, constrainedTokens = 0
            for r in 0..<repetitions {
                let a = try await run(constrained: false, count: requests, seed: UInt64(r))
                plain.append(Double(a.tokens) / a.seconds)
                plainTokens += a.tokens
                let b = try await run(constrained: true, count: requests, seed: UInt64(r))
                constrained.append(Double(b.tokens) / b.seconds)
                constrainedTokens += b.tokens
                valid += b.valid
                total += requests
            }
            let after = engine.statistics
            let masked = after.constrainedTokens - maskBefore.constrainedTokens
            let maskSeconds = after.maskSeconds - maskBefore.maskSeconds
            let buildSeconds = after.maskBuildSeconds - maskBefore.maskBuildSeconds
            let splitMasks = after.splitMasks - maskBefore.splitMasks
            let splitSeconds = after.splitMaskSeconds - maskBefore.splitMaskSeconds
            func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
            let report = Report(requests: requests, concurrency: concurrency, max_tokens: maxTokens,
                                threads: modelArguments.threads ?? ModelOptions.defaultThreads,
                                plain_tokens_per_s: median(plain), constrained_tokens_per_s: median(constrained),
                                ratio: median(constrained) / median(plain), valid_json: Double(valid) / Double(total),
                                mask_us_per_token: masked > 0 ? maskSeconds / Double(masked) * 1e6 : 0,
                                mask_walks: after.maskWalks - maskBefore.maskWalks,
                                mask_walk_ms: (after.maskWalkSeconds - maskBefore.maskWalkSeconds) / Double(max(1, after.maskWalks - maskBefore.maskWalks)) * 1e3,
                                mask_build_us_per_token: masked > 0 ? buildSeconds / Double(masked) * 1e6 : 0,
                                split_masks: splitMasks,
                                split_mask_us: splitSeconds / Double(max(1, splitMasks)) * 1e6,
                                mask_cached_us_per_token: masked > 0 ? (maskSeconds - buildSeconds) / Double(masked) * 1e6 : 0,
                                plain_tokens_per_request: Double(plainTokens) / Double(total),
                                constrained_tokens_per_request: Double(constrainedTokens) / Double(total))
            if json {
                writeOut(try jsonLine(report))
            } else {
                writeOut("""
                    | requests | concurrency | max tokens | threads | plain tok/s | JSON schema tok/s | ratio | valid JSON | mask µs/token | cached masks, µs/token | building masks, µs/token | walks (ms each) | new states from a split (µs each) | tokens/request plain, schema |
                    | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
                    | \(requests) | \(concurrency) | \(maxTokens) | \(report.threads) | \(f(report.plain_tokens_per_s)) | \(f(report.constrained_tokens_per_s)) \
                    | \(f(report.ratio, 3)) | \(f(report.valid_json * 100))% | \(f(report.mask_us_per_token)) | \(f(report.mask_cached_us_per_token)) | \(f(report.mask_build_us_per_token)) \
                    | \(report.mask_walks) (\(f(report.mask_walk_ms, 2))) | \(report.split_masks) (\(f(report.split_mask_us))) \
                    | \(f(report.plain_tokens_per_request)), \(f(report.constrained_tokens_per_request)) |
                    runs (tok/s): plain \(plain.map { f($0) }.joined(separator: ", ")); schema \(constrained.map { f($0) }.joined(separator: ", "))

                    """)
            }
        }
    }

    private func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
}
