import Foundation

/// The operation classes one engine step is made of: what the cost model predicts, what
/// `--profile` times, and what `apus roofline` lists, under the same names.
public enum StepOperation: String, CaseIterable, Sendable, Codable {
    case embedding
    case norm
    case qkvProjection = "qkv_projection"
    /// Q/K/V biases and per-head Q/K norms, where the architecture has them.
    case qkAdjust = "qk_bias_norm"
    /// RoPE on queries and keys, and the keys and values written into the cache.
    case ropeAndCacheWrite = "rope_kv_write"
    case attention
    case outputProjection = "attn_output"
    case feedForwardGateUp = "ffn_gate_up"
    case feedForwardActivation = "ffn_activation"
    case feedForwardDown = "ffn_down"
    case residual = "residual_add"
    case outputHead = "lm_head"
    case sampling
}

/// Time spent per operation class, summed over the steps it is enabled for. The forward
/// pass runs one step at a time (the runtime's lock), and sampling on the engine's thread
/// after it, so one writer at a time touches the totals; a clock read costs about 20 ns,
/// two per timed operation (`docs/performance.md` has the measured overhead).
public final class OperationProfile: @unchecked Sendable {
    private let lock = NSLock()
    private var nanoseconds = [UInt64](repeating: 0, count: StepOperation.allCases.count)
    private var calls = [Int](repeating: 0, count: StepOperation.allCases.count)
    private var steps = 0
    /// Off by default: a disabled profile costs one branch per operation.
    public var isEnabled = false

    public init() {}

    @inline(__always)
    func time<T>(_ operation: StepOperation, _ body: () throws -> T) rethrows -> T {
        guard isEnabled else { return try body() }
        let start = DispatchTime.now().uptimeNanoseconds
        defer { add(operation, DispatchTime.now().uptimeNanoseconds - start) }
        return try body()
    }

    /// Adds `nanoseconds` to `operation` (for callers that time work outside the model).
    public func add(_ operation: StepOperation, _ elapsed: UInt64) {
        let i = StepOperation.allCases.firstIndex(of: operation)!
        lock.withLock {
            nanoseconds[i] += elapsed
            calls[i] += 1
        }
    }

    func countStep() {
        guard isEnabled else { return }
        lock.withLock { steps += 1 }
    }

    public struct Snapshot: Sendable {
        /// Seconds per operation class since the last reset.
        public let seconds: [StepOperation: Double]
        public let calls: [StepOperation: Int]
        /// Forward passes since the last reset.
        public let steps: Int
    }

    public func snapshot() -> Snapshot {
        lock.withLock {
            var seconds: [StepOperation: Double] = [:], counts: [StepOperation: Int] = [:]
            for (i, op) in StepOperation.allCases.enumerated() where calls[i] > 0 {
                seconds[op] = Double(nanoseconds[i]) / 1e9
                counts[op] = calls[i]
            }
            return Snapshot(seconds: seconds, calls: counts, steps: steps)
        }
    }

    public func reset() {
        lock.withLock {
            nanoseconds = nanoseconds.map { _ in 0 }
            calls = calls.map { _ in 0 }
            steps = 0
        }
    }
}
