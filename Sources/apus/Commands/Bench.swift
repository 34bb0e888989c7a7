import ArgumentParser
import Foundation
import GGUF
import Kernels
import Models

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed: one sequence as llama-bench does (default), the serving engine's throughput, or speculative decoding.",
        subcommands: [BenchSingle.self, BenchThroughput.self, BenchSpeculative.self, BenchStructured.self],
        defaultSubcommand: BenchSingle.self)
}

struct BenchSingle: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "single",
        abstract: "Measure prompt processing and generation speed of one sequence, as llama-bench does.",
        discussion: """
            ppN processes N prompt tokens in one batch from an empty cache; tgN generates N tokens one at a time \
            from an empty cache. Each test runs once to warm up, then --repetitions times; speeds are tokens per \
            second, mean ± sample standard deviation. --json prints llama-bench's field names (n_threads, n_prompt, \
            n_gen, avg_ts, stddev_ts, ...) so that tools written for llama-bench read it.
            """)

    @Option(name: .long, help: "Path to a GGUF model file (default: the default model).")
    var model: String?

    @Option(name: [.customShort("p"), .customLong("n-prompt")], help: "Prompt lengths to test, comma-separated (0 skips).")
    var prompt: String = "512"

    @Option(name: [.customShort("n"), .customLong("n-gen")], help: "Generation lengths to test, comma-separated (0 skips).")
    var gen: String = "128"

    @Option(name: [.customShort("t"), .customLong("threads")], help: "Thread counts to test, comma-separated.")
    var threads: String = "\(ModelOptions.defaultThreads)"

    @Option(name: [.customShort("r"), .customLong("repetitions")], help: "Timed runs per test.")
    var repetitions: Int = 5

    @Option(name: .long, help: "Activation arithmetic: int8 (default) or fp32.")
    var activations: ActivationPrecision = .int8

    @Option(name: .long, help: "Highest instruction set for the int8 kernels: portable, avx2 or avx512vnni.")
    var kernels: IntegerKernels.Level?

    @Option(name: .long, help: "Where the weights live: huge-pages (copied at load into 2 MiB pages, default: decoding streams them 3-7% faster) or mapped (from the file, as llama-bench's default mmap).")
    var weights: GGUFFile.Residency = .hugePages

    @OptionGroup var kvCache: KVCacheArguments

    @Flag(name: .long, help: "Also measure a plain streaming read: 512 MiB on the weights' page size before each decode repetition (printed beside its bandwidth as a median share), and 1 GiB on 4 KiB and 2 MiB pages at the end.")
    var bandwidth = false

    @Flag(name: .long, help: "Print a JSON array with llama-bench's field names instead of a table.")
    var json = false

    struct Result: Encodable {
        let model_filename: String
        let model_type: String
        let model_size: Int
        let model_n_params: Int
        let n_threads: Int
        let n_prompt: Int
        let n_gen: Int
        let n_batch: Int
        let type_k: String
        let type_v: String
        let flash_attn: Bool
        let kernels: String
        let activations: String
        let test_time: String
        let avg_ns: Int
        let stddev_ns: Int
        let avg_ts: Double
        let stddev_ts: Double
        let samples_ns: [Int]
        let samples_ts: [Double]
        /// Weight bytes one decoded token reads (every tensor but the token embedding), and
        /// those times tokens/s (tg tests only).
        let weight_bytes_per_token: Int
        let weights_gbps: Double?
        /// With --bandwidth (tg tests): a streaming read of memory on the weights' page size,
        /// measured just before each repetition (median), and the median over repetitions of
        /// that repetition's weight bandwidth over its read: this machine's memory bandwidth
        /// moves from one second to the next, so only a read taken beside the decode compares.
        let streaming_read_gbps: Double?
        let weights_share_of_read: Double?
    }

    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    static func parseList(_ s: String, name: String) throws -> [Int] {
        let values = s.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! >= 0 && $0! <= 1 << 20 }) else {
            throw ValidationError("\(name) must be a comma-separated list of counts, got '\(s)'")
        }
        return values.map { $0! }
    }

    func validate() throws {
        if repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
        if try Self.parseList(threads, name: "--threads").contains(0) { throw ValidationError("--threads must be positive") }
        _ = try Self.parseList(prompt, name: "--n-prompt")
        _ = try Self.parseList(gen, name: "--n-gen")
    }

    func run() throws {
        try reportingErrors {
            if let kernels { IntegerKernels.limit(to: kernels) }
            let path = try ModelArguments.parse(model.map { ["--model", $0] } ?? []).resolvedPath()
            let loadStart = DispatchTime.now().uptimeNanoseconds
            let file = try GGUFFile(path: path, residency: weights)
            let loadSeconds = Double(DispatchTime.now().uptimeNanoseconds - loadStart) / 1e9
            let size = file.tensors.reduce(0) { $0 + $1.byteCount }
            let perToken = size - (file.tensors.first { $0.name == "token_embd.weight" }.map(\.byteCount) ?? 0)
                + (file.tensor(named: "output.weight") == nil ? (file.tensors.first { $0.name == "token_embd.weight" }?.byteCount ?? 0) : 0)
            let parameters = file.tensors.reduce(0) { $0 + $1.elementCount }
            let types = Dictionary(grouping: file.tensors.filter { $0.dimensions.count > 1 }, by: \.type.name).max { $0.value.count < $1.value.count }?.key ?? "?"
            let modelType = "\((try? file.metadata.string("general.architecture")) ?? "?") \(String(format: "%.0fM", Double(parameters) / 1e6)) \(types)"
            var tests: [(prompt: Int, gen: Int)] = []
            for p in try Self.parseList(prompt, name: "--n-prompt") where p > 0 { tests.append((p, 0)) }
            for g in try Self.parseList(gen, name: "--n-gen") where g > 0 { tests.append((0, g)) }
            var results: [Result] = []
            if !json {
                writeOut(String(format: "weights %@ (opened in %.2f s); a decoded token reads %.1f MiB of them\n", weights.rawValue as NSString, loadSeconds, Double(perToken) / 1_048_576))
                writeOut("| model | size | params | threads | kernels | test | t/s | weights GB/s |\n| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n")
            }
            for t in try Self.parseList(threads, name: "--threads") {
                let lm = try ModelRegistry.load(file, options: ModelOptions(threads: t, precision: activations, kvType: kvCache.type))
                for test in tests {
                    var samples: [Double] = [], reads: [Double] = []
                    for repetition in 0...repetitions {
                        let read = bandwidth && test.gen > 0 && repetition > 0
                            ? StreamingRead.gigabytesPerSecond(bytes: 1 << 29, threads: t, hugePages: weights == .hugePages, repetitions: 1) : nil
                        let seconds = try Self.measure(lm, prompt: test.prompt, gen: test.gen)
                        guard repetition > 0 else { continue }  // the first run warms up
                        samples.append(seconds)
                        if let read { reads.append(read) }
                    }
                    let shares = zip(samples, reads).map { Double(perToken) * Double(test.gen) / $0 / 1e9 / $1 }
                    let n = Double(test.prompt + test.gen)
                    let ts = samples.map { n / $0 }
                    let mean = ts.reduce(0, +) / Double(ts.count)
                    let sd = ts.count > 1 ? (ts.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(ts.count - 1)).squareRoot() : 0
                    let meanNs = samples.reduce(0, +) / Double(samples.count) * 1e9
                    let sdNs = samples.count > 1 ? (samples.map { ($0 * 1e9 - meanNs) * ($0 * 1e9 - meanNs) }.reduce(0, +) / Double(samples.count - 1)).squareRoot() : 0
                    let name = test.prompt > 0 ? "pp\(test.prompt)" : "tg\(test.gen)"
                    let result = Result(
                        model_filename: path, model_type: modelType, model_size: size, model_n_params: parameters, n_threads: t,
                        n_prompt: test.prompt, n_gen: test.gen, n_batch: test.prompt, type_k: "f16", type_v: "f16", flash_attn: true,
                        kernels: "\(IntegerKernels.level)", activations: activations.rawValue,
                        test_time: ISO8601DateFormatter().string(from: Date()), avg_ns: Int(meanNs), stddev_ns: Int(sdNs),
                        avg_ts: mean, stddev_ts: sd, samples_ns: samples.map { Int($0 * 1e9) }, samples_ts: ts,
                        weight_bytes_per_token: perToken, weights_gbps: test.gen > 0 ? Double(perToken) * mean / 1e9 : nil,
                        streaming_read_gbps: Self.median(reads), weights_share_of_read: Self.median(shares))
                    results.append(result)
                    if !json {
                        var gbps = result.weights_gbps.map { String(format: "%.1f", $0) } ?? ""
                        if let read = result.streaming_read_gbps, let share = result.weights_share_of_read {
                            gbps += String(format: " (%.0f%% of a %.1f GB/s read beside it)", 100 * share, read)
                        }
                        writeOut(String(format: "| %@ | %.2f MiB | %.2f M | %d | %@ | %@ | %.2f ± %.2f | %@ |\n", modelType as NSString, Double(size) / 1_048_576,
                                        Double(parameters) / 1e6, t, "\(IntegerKernels.level)" as NSString, name as NSString, mean, sd, gbps as NSString))
                    }
                }
            }
            if bandwidth {
                for t in try Self.parseList(threads, name: "--threads") {
                    let small = StreamingRead.gigabytesPerSecond(threads: t, hugePages: false)
                    let huge = StreamingRead.gigabytesPerSecond(threads: t, hugePages: true)
                    FileHandle.standardError.write(Data(String(format: "streaming read, %d threads: %.1f GB/s on 4 KiB pages, %.1f GB/s on 2 MiB pages\n", t, small, huge).utf8))
                }
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                writeOut(String(decoding: try encoder.encode(results), as: UTF8.self) + "\n")
            }
        }
    }

    /// Seconds for one run of a test: a batch of `prompt` random tokens, or `gen` single-token steps.
    static func measure(_ model: any LanguageModel, prompt: Int, gen: Int) throws -> Double {
        var random = SystemRandomNumberGenerator()
        let cache = model.makeCache(capacity: max(prompt, gen) + 1)
        let start = DispatchTime.now().uptimeNanoseconds
        if prompt > 0 {
            let tokens = (0..<prompt).map { _ in Int.random(in: 0..<model.vocabularySize, using: &random) }
            _ = try model.forward(tokens, cache: cache, logitRows: (prompt - 1)..<prompt)
        } else {
            var token = Int.random(in: 0..<model.vocabularySize, using: &random)
            for _ in 0..<gen {
                let logits = try model.forward([token], cache: cache, logitRows: 0..<1)
                token = logits.withUnsafeBufferPointer { Argmax.index($0) }  // greedy, as the engine samples at temperature 0
            }
        }
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}
