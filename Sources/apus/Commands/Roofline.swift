import ArgumentParser
import Engine
import Foundation
import Kernels
import Models

struct RooflineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "roofline",
        abstract: "Where one decode step's time goes: every operation's FLOPs, bytes, intensity, bound and predicted time.",
        discussion: """
            A step is --batch sequences each adding one token at --context positions. Each operation's time is \
            predicted as the larger of its bytes over the memory bandwidth and its arithmetic over the roof that \
            bounds it. --hardware this measures the roofs here with small probes (a streaming read on 4 KiB pages, \
            an fp32 multiply-add loop, each quantized matrix kernel per format and matrix shape on a matrix that stays in \
            cache, the attention kernel on a KV cache read from memory), cached per \
            machine and thread count in ~/.cache/apus/hardware/ (measured again after a rebuild or upgrade); \
            h100, h200 and m3-max are datasheet figures, and their times are predictions. --measure runs real steps (after --warmup, the median of --steps) with \
            per-operation timers and prints the measured time and the ratio beside the prediction. --svg writes \
            the roofline plot, one point per operation.
            """)

    @OptionGroup var modelArguments: ModelArguments

    @Option(name: .long, help: "Sequences in the step, each adding one token.")
    var batch = 1

    @Option(name: .long, help: "Positions each sequence attends to.")
    var context = 512

    @Option(name: .long, help: "this (measured here), or a datasheet profile: \(HardwareProfile.datasheets.keys.sorted().joined(separator: ", ")).")
    var hardware = "this"

    @Flag(name: .long, help: "Run real steps and print measured times beside the predictions.")
    var measure = false

    @Option(name: .long, help: "Timed steps with --measure (the median is reported).")
    var steps = 20

    @Option(name: .long, help: "Untimed steps first with --measure.")
    var warmup = 3

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    @Option(name: .long, help: "Write the roofline plot as SVG to this file.")
    var svg: String?

    func validate() throws {
        if !(1...256).contains(batch) { throw ValidationError("--batch must be between 1 and 256") }
        if !(1...(1 << 20)).contains(context) { throw ValidationError("--context must be between 1 and 1048576") }
        if hardware != "this" && HardwareProfile.datasheets[hardware] == nil {
            throw ValidationError("--hardware must be this or one of \(HardwareProfile.datasheets.keys.sorted().joined(separator: ", ")), got '\(hardware)'")
        }
        if steps < 1 || warmup < 0 { throw ValidationError("--steps must be at least 1, --warmup at least 0") }
        if measure && hardware != "this" { throw ValidationError("--measure runs here; it needs --hardware this") }
    }

    struct Report: Encodable {
        struct Op: Encodable {
            let name: String
            let flops: Double
            let bytes: Double
            let intensity: Double
            let bound: String
            let predicted_ms: Double
            let measured_ms: Double?
        }
        let hardware: String
        let predicted: Bool
        let threads: Int
        let batch: Int
        let context: Int
        let bandwidth_gbs: Double
        let ops: [Op]
        let predicted_ms: Double
        let measured_ms: Double?
        /// The measured step less the operations' sum: scheduling, layout, thread wake-ups.
        let measured_other_ms: Double?
    }

    func run() throws {
        try reportingErrors {
            let loaded = try modelArguments.load()
            let model = loaded.model
            let threads = modelArguments.threads ?? ModelOptions.defaultThreads
            let step = StepShape(sequences: batch, context: context)
            let costs = model.stepCosts(step)
            var profile: HardwareProfile
            if hardware == "this" {
                // Every width up to 16, so that the memory-bound width below can be answered.
                let widths = [1, 2, 4, 8, 16].flatMap { model.stepCosts(StepShape(sequences: $0, context: context)) }
                profile = try MachineProfiles.load(threads: threads, precision: modelArguments.activations, needing: costs + widths, vocabulary: model.vocabularySize)
            } else {
                profile = HardwareProfile.datasheets[hardware]!
            }
            let rows = Roofline.rows(costs, on: profile)
            let predicted = Roofline.stepSeconds(costs, on: profile)
            var measured: (step: Double, ops: [StepOperation: Double])?
            if measure { measured = try StepMeasurement.run(model, step: step, warmup: warmup, steps: steps) }
            let report = Report(
                hardware: profile.name, predicted: !profile.measured, threads: profile.threads, batch: batch, context: context,
                bandwidth_gbs: profile.bandwidthGBs,
                ops: rows.map { r in
                    Report.Op(name: r.operation.rawValue, flops: r.flops, bytes: r.bytes, intensity: r.intensity, bound: r.bound.rawValue,
                              predicted_ms: r.predictedSeconds * 1000, measured_ms: measured.map { ($0.ops[r.operation] ?? 0) * 1000 })
                },
                predicted_ms: predicted * 1000, measured_ms: measured.map { $0.step * 1000 },
                measured_other_ms: measured.map { m in (m.step - m.ops.values.reduce(0, +)) * 1000 })
            if let svg {
                try RooflinePlot(report: report, profile: profile, costs: costs).svg().write(toFile: svg, atomically: true, encoding: .utf8)
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                writeOut(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
                return
            }
            writeOut(table(report, profile: profile, costs: costs, memoryBound: Roofline.memoryBoundTokens(model, context: context, on: profile, upTo: 16)))
        }
    }

    private func table(_ r: Report, profile: HardwareProfile, costs: [OperationCost], memoryBound: Int) -> String {
        var out = String(format: "%@%@, %d threads: %.1f GB/s streaming read, %.1f GFLOP/s fp32 vector, %.2f us per pool pass, %.2f ns per logit sampled\n",
                         r.hardware as NSString, profile.measured ? " (measured)" : " (predicted)", profile.threads, profile.bandwidthGBs,
                         profile.vectorGFLOPs, profile.dispatchMicroseconds, profile.samplingNanosecondsPerLogit)
        let used = Roofline.matrixKeys(costs)
        for (key, value) in profile.matrixGOPs.sorted(by: { $0.key < $1.key }) where used.contains(key) || key == "*" {
            out += String(format: "  matrix kernel %@: %.1f GOP/s\n", key as NSString, value)
        }
        let attention = Set(costs.compactMap { c in if case .attention(let roof, _) = c.unit { roof.key(tokens: c.tokens) } else { nil } })
        for (key, value) in profile.attentionNanoseconds.sorted(by: { $0.key < $1.key }) where attention.contains(key) {
            out += String(format: "  attention kernel %@: %.2f ns per head and position\n", key as NSString, value)
        }
        out += "step: \(r.batch) sequence\(r.batch == 1 ? "" : "s") × 1 token at \(r.context) positions\n\n"
        let measured = r.measured_ms != nil
        out += "| operation | GFLOP | MB | FLOP/B | bound | predicted ms |" + (measured ? " measured ms | measured/predicted |" : "") + "\n"
        out += "| --- | ---: | ---: | ---: | --- | ---: |" + (measured ? " ---: | ---: |" : "") + "\n"
        for op in r.ops {
            out += String(format: "| %@ | %.4f | %.2f | %.2f | %@ | %.3f |", op.name as NSString, op.flops / 1e9, op.bytes / 1e6, op.intensity,
                          op.bound as NSString, op.predicted_ms)
            if let m = op.measured_ms { out += String(format: " %.3f | %.2f |", m, op.predicted_ms > 0 ? m / op.predicted_ms : 0) }
            out += "\n"
        }
        let flops = r.ops.reduce(0) { $0 + $1.flops }, bytes = r.ops.reduce(0) { $0 + $1.bytes }
        out += String(format: "| step | %.4f | %.2f | %.2f | | %.3f |", flops / 1e9, bytes / 1e6, flops / bytes, r.predicted_ms)
        if let m = r.measured_ms { out += String(format: " %.3f | %.2f |", m, m / r.predicted_ms) }
        out += "\n"
        if let other = r.measured_other_ms { out += String(format: "\nmeasured outside the operations (layout, scheduling, thread wake-ups): %.3f ms\n", other) }
        out += "matrix products stay memory-bound up to \(memoryBound)\(memoryBound == 16 ? "+" : "") token\(memoryBound == 1 ? "" : "s") per step at this context (past it, each token costs arithmetic)\n"
        return out
    }
}

/// `HardwareProfile`s of this machine, measured once per thread count and activation
/// precision and kept in `~/.cache/apus/hardware/` (keyed by the CPU's model name), with
/// matrix roofs added as models need them, and measured again when the binary changes
/// (its kernels and sampler may run at other speeds).
enum MachineProfiles {
    static var directory: URL {
        let home = ProcessInfo.processInfo.environment["APUS_HOME"] ?? (NSHomeDirectory() + "/.cache/apus")
        return URL(fileURLWithPath: home).appendingPathComponent("hardware")
    }

    static var cpuName: String {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let line = info.split(separator: "\n").first { $0.hasPrefix("model name") }
        return line.map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
    }

    /// This executable's size and modification time: a rebuilt or upgraded binary counts as
    /// another build (cheaper than hashing ~100 MB at every start).
    static var kernelsBuild: String {
        let path = Bundle.main.executablePath ?? CommandLine.arguments[0]
        let attributes = (try? FileManager.default.attributesOfItem(atPath: path)) ?? [:]
        let size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        return "\(size)-\(Int64(modified))"
    }

    /// Nanoseconds per logit of the engine's sampler at its default settings, on random
    /// rows of `vocabulary` logits: the median of 50 draws.
    static func samplerSpeed(vocabulary: Int) throws -> Double {
        var sampler = try Sampler(SamplingParameters())
        var generator = SystemRandomNumberGenerator()
        let rows = (0..<8).map { _ in (0..<vocabulary).map { _ in Float.random(in: -10...10, using: &generator) } }
        var samples: [Double] = []
        for i in 0..<50 {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = sampler.sample(rows[i % rows.count], history: [])
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start))
        }
        return samples.sorted()[samples.count / 2] / Double(vocabulary)
    }

    static func load(threads: Int, precision: ActivationPrecision, needing costs: [OperationCost], vocabulary: Int) throws -> HardwareProfile {
        let name = cpuName
        let slug = String(name.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }).split(separator: "-").joined(separator: "-")
        let file = directory.appendingPathComponent("\(slug)-\(threads)t-\(precision.rawValue).json")
        var profile: HardwareProfile
        var measuredNow = false
        let build = kernelsBuild
        if let data = try? Data(contentsOf: file), let cached = try? JSONDecoder().decode(HardwareProfile.self, from: data), cached.kernelsBuild == build {
            profile = cached
        } else {
            measuredNow = true
            FileHandle.standardError.write(Data("measuring this machine (\(name), \(threads) threads): bandwidth, fp32 throughput, dispatch latency, the sampler...\n".utf8))
            profile = HardwareProfile(name: name, threads: threads, measured: true, bandwidthGBs: HardwareProbe.bandwidth(threads: threads),
                                      vectorGFLOPs: HardwareProbe.vectorThroughput(threads: threads), matrixGOPs: [:],
                                      dispatchMicroseconds: HardwareProbe.dispatchLatency(threads: threads),
                                      samplingNanosecondsPerLogit: try samplerSpeed(vocabulary: vocabulary))
        }
        profile.kernelsBuild = build
        let missing = Roofline.missingRoofs(costs, on: profile)
        for (roof, tokens) in missing {
            let key = roof.key(tokens: tokens)
            FileHandle.standardError.write(Data("measuring the matrix kernel (\(key))...\n".utf8))
            profile.matrixGOPs[key] = HardwareProbe.matrixThroughput(roof, tokens: HardwareProfile.probedWidth(tokens), threads: threads, precision: precision)
        }
        let missingAttention = Roofline.missingAttentionRoofs(costs, on: profile)
        for (roof, tokens) in missingAttention {
            let key = roof.key(tokens: tokens)
            FileHandle.standardError.write(Data("measuring attention (\(key))...\n".utf8))
            profile.attentionNanoseconds[key] = HardwareProbe.attentionNanoseconds(roof, tokens: HardwareProfile.probedWidth(tokens), threads: threads)
        }
        if measuredNow || !missing.isEmpty || !missingAttention.isEmpty {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(profile).write(to: file)
        }
        return profile
    }
}

/// Real decode steps of `model` with the operation profile on: `step.sequences` sequences
/// whose caches hold `step.context - 1` random tokens, each adding one token at the same
/// position every step (so the context stays put), then the engine's sampler at its
/// defaults on each row, timed as sampling.
enum StepMeasurement {
    static func run(_ model: any LanguageModel, step: StepShape, warmup: Int, steps: Int) throws -> (step: Double, ops: [StepOperation: Double]) {
        let blockSize = 16, blocksPerSequence = (step.context + blockSize - 1) / blockSize
        let cache = model.makePagedCache(blockSize: blockSize, blockCount: step.sequences * blocksPerSequence)
        let tables = (0..<step.sequences).map { s in (0..<blocksPerSequence).map { Int32(s * blocksPerSequence + $0) } }
        var random = SystemRandomNumberGenerator()
        let filled = step.context - 1
        for table in tables where filled > 0 {
            var start = 0
            while start < filled {
                let count = min(512, filled - start)
                var batch = ForwardBatch()
                batch.append((0..<count).map { _ in Int.random(in: 0..<model.vocabularySize, using: &random) }, firstPosition: start,
                             blockTable: table, logitsOfLast: 0)
                _ = try model.forward(batch, cache: cache)
                start += count
            }
        }
        var decode = ForwardBatch()
        for table in tables {
            decode.append([Int.random(in: 0..<model.vocabularySize, using: &random)], firstPosition: filled, blockTable: table, logitsOfLast: 1)
        }
        let profile = model.profile
        var samplers = try (0..<step.sequences).map { _ in try Sampler(SamplingParameters()) }
        var times: [Double] = [], snapshots: [OperationProfile.Snapshot] = []
        for i in 0..<(warmup + steps) {
            profile.reset()
            profile.isEnabled = true
            let start = DispatchTime.now().uptimeNanoseconds
            let logits = try model.forward(decode, cache: cache)
            let sampling = DispatchTime.now().uptimeNanoseconds
            let width = model.vocabularySize
            for s in samplers.indices { _ = samplers[s].sample(Array(logits[(s * width)..<((s + 1) * width)]), history: []) }
            let end = DispatchTime.now().uptimeNanoseconds
            profile.add(.sampling, end - sampling)
            profile.isEnabled = false
            if i >= warmup {
                times.append(Double(end - start) / 1e9)
                snapshots.append(profile.snapshot())
            }
        }
        // The median step, and each operation's median over the same steps.
        let median = times.sorted()[times.count / 2]
        var ops: [StepOperation: Double] = [:]
        for op in StepOperation.allCases {
            let values = snapshots.compactMap { $0.seconds[op] }.sorted()
            if !values.isEmpty { ops[op] = values[values.count / 2] }
        }
        return (median, ops)
    }
}

/// The roofline plot: attainable performance (GFLOP/s) against arithmetic intensity
/// (FLOP/byte) on log axes, the bandwidth slope meeting each compute roof, and one point
/// per operation at its predicted (or, measured, its achieved) performance.
struct RooflinePlot {
    let report: RooflineCommand.Report
    let profile: HardwareProfile
    let costs: [OperationCost]

    func svg() -> String {
        let width = 900.0, height = 560.0, left = 80.0, right = 220.0, top = 40.0, bottom = 60.0
        let points: [(name: String, x: Double, y: Double)] = report.ops.compactMap { op in
            let seconds = (op.measured_ms ?? op.predicted_ms) / 1000
            guard op.flops > 0, op.bytes > 0, seconds > 0 else { return nil }
            return (op.name, op.intensity, op.flops / seconds / 1e9)
        }
        let used = Roofline.matrixKeys(costs)
        // Attention's roof as GFLOP/s: a head and position's 4·d + 5 operations in its measured time.
        var attention: [String: Double] = [:]
        for c in costs {
            if case .attention(let roof, _) = c.unit, let ns = profile.attentionNanoseconds[roof.key(tokens: c.tokens)] {
                attention["attention \(roof.key(tokens: c.tokens))"] = Double(4 * roof.headDim + 5) / ns
            }
        }
        let roofs = [("fp32 vector", profile.vectorGFLOPs)]
            + profile.matrixGOPs.filter { used.contains($0.key) || $0.key == "*" }.sorted { $0.key < $1.key }.map { ("matrix \($0.key)", $0.value) }
            + attention.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        let xs = points.map(\.x) + roofs.map { $0.1 / profile.bandwidthGBs }
        let ys = points.map(\.y) + roofs.map(\.1)
        let (x0, x1) = (log10(max(1e-3, xs.min()! / 3)), log10(xs.max()! * 3))
        let (y0, y1) = (log10(max(1e-3, ys.min()! / 3)), log10(ys.max()! * 3))
        func px(_ x: Double) -> Double { left + (log10(x) - x0) / (x1 - x0) * (width - left - right) }
        func py(_ y: Double) -> Double { height - bottom - (log10(y) - y0) / (y1 - y0) * (height - top - bottom) }
        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="11">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="22" font-size="14">\(escape(report.hardware)): \(report.batch) × 1 token at \(report.context) positions, \(report.measured_ms != nil ? "measured" : "predicted") points</text>

            """
        // Decade grid lines and labels.
        for e in Int(floor(x0))...Int(ceil(x1)) where Double(e) >= x0 && Double(e) <= x1 {
            let x = px(pow(10, Double(e)))
            s += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(height - bottom)\" stroke=\"#eee\"/><text x=\"\(x)\" y=\"\(height - bottom + 16)\" text-anchor=\"middle\">1e\(e)</text>\n"
        }
        for e in Int(floor(y0))...Int(ceil(y1)) where Double(e) >= y0 && Double(e) <= y1 {
            let y = py(pow(10, Double(e)))
            s += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(width - right)\" y2=\"\(y)\" stroke=\"#eee\"/><text x=\"\(left - 6)\" y=\"\(y + 4)\" text-anchor=\"end\">1e\(e)</text>\n"
        }
        s += "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 20)\" text-anchor=\"middle\">arithmetic intensity (FLOP/byte)</text>\n"
        s += "<text x=\"20\" y=\"\((top + height - bottom) / 2)\" transform=\"rotate(-90 20 \((top + height - bottom) / 2))\" text-anchor=\"middle\">GFLOP/s</text>\n"
        // Each roof: the bandwidth slope up to its ridge point, then flat.
        let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
        for (i, (name, roof)) in roofs.enumerated() {
            let ridge = roof / profile.bandwidthGBs, start = pow(10, x0), end = pow(10, x1)
            let color = colors[i % colors.count]
            s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(px(start)),\(py(max(pow(10, y0), start * profile.bandwidthGBs))) \(px(ridge)),\(py(roof)) \(px(end)),\(py(roof))\"/>\n"
            s += "<text x=\"\(width - right + 6)\" y=\"\(py(roof) + 4)\" fill=\"\(color)\">\(escape(name)) \(String(format: "%.0f", roof))</text>\n"
        }
        s += "<text x=\"\(px(pow(10, x0)) + 8)\" y=\"\(py(max(pow(10, y0), pow(10, x0) * profile.bandwidthGBs)) - 8)\">\(String(format: "%.1f GB/s", profile.bandwidthGBs))</text>\n"
        for (i, p) in points.enumerated() {
            let (x, y) = (px(p.x), py(p.y))
            s += "<circle cx=\"\(x)\" cy=\"\(y)\" r=\"4\" fill=\"black\"/><text x=\"\(x + 6)\" y=\"\(y + (i % 2 == 0 ? -4 : 12))\">\(escape(p.name))</text>\n"
        }
        return s + "</svg>\n"
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

/// The `--profile` table: each operation class's time over a run, its share, and its time
/// per forward pass.
enum OperationTable {
    static func render(_ s: OperationProfile.Snapshot, wall: Double) -> String {
        let total = s.seconds.values.reduce(0, +)
        var out = "\n| operation | seconds | share of profiled | ms per step |\n| --- | ---: | ---: | ---: |\n"
        for op in StepOperation.allCases {
            guard let seconds = s.seconds[op] else { continue }
            out += String(format: "| %@ | %.3f | %.1f%% | %.3f |\n", op.rawValue as NSString, seconds, 100 * seconds / max(total, 1e-12),
                          1000 * seconds / Double(max(s.steps, 1)))
        }
        out += String(format: "| all profiled | %.3f | 100%% | %.3f |\n", total, 1000 * total / Double(max(s.steps, 1)))
        out += String(format: "%d forward passes in %.2f s of wall time; the rest is scheduling, batch layout and the engine's bookkeeping.\n", s.steps, wall)
        return out
    }
}
