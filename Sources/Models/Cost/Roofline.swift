import Kernels

/// A step's operations against a machine's roofs: each operation's time is the larger of
/// its arithmetic over the roof that bounds it and its bytes over the bandwidth (the
/// roofline model of Williams et al., as LLM-Viewer applies it to inference), plus the
/// thread pool's dispatch latency for each pass it takes (on a CPU with a few cores and a
/// small model, hundreds of short passes a step make that floor visible). An operation too
/// small to split runs on one thread, at that thread's share of the vector roof.
public enum Roofline {
    public enum Bound: String, Sendable, Codable {
        case memory
        case compute
        /// Dispatch latency outweighs both.
        case latency
    }

    /// One operation class of a step, summed over layers (and over weight formats, where
    /// a class mixes them).
    public struct Row: Sendable {
        public let operation: StepOperation
        public let flops: Double
        public let bytes: Double
        public var intensity: Double { bytes > 0 ? flops / bytes : 0 }
        public let bound: Bound
        public let predictedSeconds: Double
        /// What the bytes alone take, the arithmetic alone, and the pool's passes.
        public let memorySeconds: Double
        public let computeSeconds: Double
        public let dispatchSeconds: Double
    }

    /// The matrix roofs `costs` use, by `MatrixRoof.key(tokens:)`.
    public static func matrixKeys(_ costs: [OperationCost]) -> Set<String> {
        Set(costs.compactMap { c in if case .matrix(let roof) = c.unit { roof.key(tokens: c.tokens) } else { nil } })
    }

    /// The matrix roofs `costs` need that `hardware` lacks (format, shape and batch width).
    public static func missingRoofs(_ costs: [OperationCost], on hardware: HardwareProfile) -> [(roof: MatrixRoof, tokens: Int)] {
        var seen = Set<String>(), missing: [(roof: MatrixRoof, tokens: Int)] = []
        for c in costs {
            guard case .matrix(let roof) = c.unit, hardware.matrixRoof(roof, tokens: c.tokens) == nil else { continue }
            if seen.insert(roof.key(tokens: c.tokens)).inserted { missing.append((roof, c.tokens)) }
        }
        return missing
    }

    /// Seconds `cost` takes on `hardware`: its bytes over the bandwidth, its arithmetic over
    /// its roof, and its pool passes.
    public static func seconds(_ cost: OperationCost, on hardware: HardwareProfile) -> (memory: Double, compute: Double, dispatch: Double) {
        let memory = cost.bytes / (hardware.bandwidthGBs * 1e9)
        let dispatch = Double(cost.dispatches) * hardware.dispatchMicroseconds / 1e6
        let share = cost.parallel || hardware.threads < 2 ? 1 : 1 / Double(hardware.threads)
        switch cost.unit {
        case .vector:
            return (memory, cost.flops / (hardware.vectorGFLOPs * share * 1e9), dispatch)
        case .sampler(let logits):
            guard hardware.samplingNanosecondsPerLogit > 0 else { return (memory, cost.flops / (hardware.vectorGFLOPs * share * 1e9), dispatch) }
            return (memory, Double(logits) * hardware.samplingNanosecondsPerLogit / 1e9, dispatch)
        case .matrix(let matrix):
            guard let roof = hardware.matrixRoof(matrix, tokens: cost.tokens) else {
                preconditionFailure("no matrix roof for \(matrix.key(tokens: cost.tokens)): probe it first (missingRoofs)")
            }
            return (memory, cost.flops / (roof * 1e9), dispatch)
        case .attention(let roof, let headPositions):
            // The kernel's own probe, all threads at the step's batch width; a datasheet
            // profile has the vector roof only.
            guard let nanoseconds = hardware.attentionNanoseconds[roof.key(tokens: cost.tokens)] else {
                return (memory, cost.flops / (hardware.vectorGFLOPs * share * 1e9), dispatch)
            }
            return (memory, Double(headPositions) * nanoseconds / 1e9, dispatch)
        }
    }

    /// The attention roofs `costs` need that a measured `hardware` lacks (heads, cache type,
    /// batch width).
    public static func missingAttentionRoofs(_ costs: [OperationCost], on hardware: HardwareProfile) -> [(roof: AttentionRoof, tokens: Int)] {
        guard hardware.measured else { return [] }
        var seen = Set<String>(), missing: [(roof: AttentionRoof, tokens: Int)] = []
        for c in costs {
            guard case .attention(let roof, _) = c.unit else { continue }
            let key = roof.key(tokens: c.tokens)
            if hardware.attentionNanoseconds[key] == nil, seen.insert(key).inserted { missing.append((roof, c.tokens)) }
        }
        return missing
    }

    /// The step's rows, in the order operations first appear.
    public static func rows(_ costs: [OperationCost], on hardware: HardwareProfile) -> [Row] {
        var order: [StepOperation] = []
        var sums: [StepOperation: (flops: Double, bytes: Double, time: Double, memory: Double, compute: Double, dispatch: Double)] = [:]
        for c in costs {
            if sums[c.operation] == nil { order.append(c.operation) }
            let (memory, compute, dispatch) = seconds(c, on: hardware)
            var s = sums[c.operation] ?? (0, 0, 0, 0, 0, 0)
            s.flops += c.flops
            s.bytes += c.bytes
            s.time += max(memory, compute) + dispatch
            s.memory += memory
            s.compute += compute
            s.dispatch += dispatch
            sums[c.operation] = s
        }
        return order.map { op in
            let s = sums[op]!
            let bound: Bound = s.dispatch > max(s.memory, s.compute) ? .latency : s.memory >= s.compute ? .memory : .compute
            return Row(operation: op, flops: s.flops, bytes: s.bytes, bound: bound, predictedSeconds: s.time,
                       memorySeconds: s.memory, computeSeconds: s.compute, dispatchSeconds: s.dispatch)
        }
    }

    /// The predicted time of the whole step.
    public static func stepSeconds(_ costs: [OperationCost], on hardware: HardwareProfile) -> Double {
        costs.reduce(0) { total, c in
            let (memory, compute, dispatch) = seconds(c, on: hardware)
            return total + max(memory, compute) + dispatch
        }
    }

    /// The most tokens (sequences each adding one, at `context`) a step of `model` can take
    /// before its matrix products stop being memory-bound on `hardware`: below it, more
    /// tokens per step (a larger batch, more drafted tokens to verify) cost almost nothing.
    /// Roofs for batch widths past 16 are the 16-wide kernel's.
    public static func memoryBoundTokens(_ model: any LanguageModel, context: Int, on hardware: HardwareProfile, upTo limit: Int = 64) -> Int {
        var best = 1
        for n in 1...max(1, limit) {
            let costs = model.stepCosts(StepShape(sequences: n, context: context)).filter { if case .matrix = $0.unit { true } else { false } }
            guard missingRoofs(costs, on: hardware).isEmpty else { break }
            let (memory, compute) = costs.reduce((0.0, 0.0)) { acc, c in
                let (m, k, _) = seconds(c, on: hardware)
                return (acc.0 + m, acc.1 + k)
            }
            guard compute <= memory else { break }
            best = n
        }
        return best
    }
}
