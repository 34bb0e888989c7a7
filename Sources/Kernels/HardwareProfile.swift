import Foundation
import KernelsC

/// The limits a roofline is drawn against: memory bandwidth, vector floating-point
/// throughput, and the throughput of the quantized matrix kernels per weight format and
/// batch width. "this" machine's are measured by `HardwareProbe` (an empirical roofline, as
/// the Empirical Roofline Toolkit draws one: what the code can reach, not the datasheet's
/// peak); other machines' come from datasheets and say so (`measured` false).
public struct HardwareProfile: Codable, Sendable, Equatable {
    public var name: String
    public var threads: Int
    /// Measured here, or taken from a datasheet (a prediction for that machine).
    public var measured: Bool
    /// Streaming read bandwidth, GB/s.
    public var bandwidthGBs: Double
    /// Vector fp32 throughput, GFLOP/s (norms, RoPE, attention, activations, sampling).
    public var vectorGFLOPs: Double
    /// Quantized matrix-product throughput, GOP/s (a multiply-add is two), by
    /// `MatrixRoof.key(tokens:)`; a datasheet profile has one figure for every format, "*".
    public var matrixGOPs: [String: Double]
    /// What handing work to the thread pool and waiting for it costs, once per parallel
    /// operation (a GPU's kernel launch plays the same part): the latency floor of a step
    /// made of many small operations.
    public var dispatchMicroseconds: Double
    /// The sampler's time per vocabulary entry of a logits row (softmax, top-k, top-p and
    /// the draw at the engine's defaults; scalar code, so its own roof); 0 takes the vector roof.
    public var samplingNanosecondsPerLogit: Double
    /// Attention's time per (query head, position) with every thread working, by
    /// `AttentionRoof.key`: from the kernel itself, as a step splits it, on keys and values
    /// read from memory as a step reads them (its softmax recurrence, not the FMA units, sets
    /// most of its pace on a CPU); where absent, the vector roof stands in.
    public var attentionNanoseconds: [String: Double]
    /// The build that measured this profile (nil for a datasheet): another build's kernels
    /// and sampler may run at other speeds, so a cached profile is measured again.
    public var kernelsBuild: String?

    public init(name: String, threads: Int, measured: Bool, bandwidthGBs: Double, vectorGFLOPs: Double, matrixGOPs: [String: Double],
                dispatchMicroseconds: Double = 0, samplingNanosecondsPerLogit: Double = 0, attentionNanoseconds: [String: Double] = [:]) {
        self.name = name
        self.threads = threads
        self.measured = measured
        self.bandwidthGBs = bandwidthGBs
        self.vectorGFLOPs = vectorGFLOPs
        self.matrixGOPs = matrixGOPs
        self.dispatchMicroseconds = dispatchMicroseconds
        self.samplingNanosecondsPerLogit = samplingNanosecondsPerLogit
        self.attentionNanoseconds = attentionNanoseconds
    }


    /// The batch width whose roof stands for `tokens`: kernel speed depends on how many
    /// tokens share a pass over the weights (1 takes the single-token kernel, more the tiled
    /// one, whose tile is 16 wide), measured at 1, 2, 4, 8 and 16, a width rounded up to
    /// the next of them.
    public static func probedWidth(_ tokens: Int) -> Int {
        var width = 1
        while width < min(max(tokens, 1), 16) { width *= 2 }
        return width
    }

    /// The matrix roof for `roof` at `tokens`, where known.
    public func matrixRoof(_ roof: MatrixRoof, tokens: Int) -> Double? {
        matrixGOPs[roof.key(tokens: tokens)] ?? matrixGOPs["*"]
    }

    /// Datasheet figures (dense, no sparsity): bandwidth, fp32 vector and int8 matrix peaks.
    public static let datasheets: [String: HardwareProfile] = [
        // NVIDIA H100 SXM5: 3.35 TB/s HBM3, 67 TFLOP/s fp32, 1979 TOP/s int8 tensor cores;
        // a CUDA kernel launch takes a few microseconds.
        "h100": HardwareProfile(name: "NVIDIA H100 SXM (datasheet)", threads: 0, measured: false, bandwidthGBs: 3350, vectorGFLOPs: 67_000,
                                matrixGOPs: ["*": 1_979_000], dispatchMicroseconds: 4),
        // NVIDIA H200 SXM: 4.8 TB/s HBM3e, the same compute as H100.
        "h200": HardwareProfile(name: "NVIDIA H200 SXM (datasheet)", threads: 0, measured: false, bandwidthGBs: 4800, vectorGFLOPs: 67_000,
                                matrixGOPs: ["*": 1_979_000], dispatchMicroseconds: 4),
        // Apple M3 Max (16-core CPU, 40-core GPU): 400 GB/s unified memory, about 16 TFLOP/s fp32 on the GPU.
        "m3-max": HardwareProfile(name: "Apple M3 Max (datasheet)", threads: 0, measured: false, bandwidthGBs: 400, vectorGFLOPs: 16_000,
                                  matrixGOPs: ["*": 16_000], dispatchMicroseconds: 10),
    ]
}

/// Small probes that measure this machine's `HardwareProfile`: a streaming read on the
/// page size the weights use, an fp32 fused multiply-add loop in registers, each quantized
/// matrix kernel per format and shape on a matrix that stays in cache, and the attention
/// kernel on a KV cache read from memory.
public enum HardwareProbe {
    /// Streaming read GB/s on 4 KiB pages (the page size of mapped weight files).
    public static func bandwidth(threads: Int) -> Double {
        StreamingRead.gigabytesPerSecond(bytes: 512 << 20, threads: threads, hugePages: false, repetitions: 3)
    }

    /// fp32 GFLOP/s of independent fused multiply-add chains at the widest vectors the CPU
    /// has (AVX-512, AVX2, else scalar), on every thread: the vector units' ceiling.
    public static func vectorThroughput(threads: Int) -> Double {
        let pool = ThreadPool(threads: threads)
        let iterations = 2_000_000
        var best = 0.0
        var sinks = [Float](repeating: 0, count: threads * 16)
        sinks.withUnsafeMutableBufferPointer { buffer in
            let base = UncheckedBox(buffer.baseAddress!)
            for _ in 0..<5 {
                let flops = UnsafeMutablePointer<Double>.allocate(capacity: threads)
                defer { flops.deallocate() }
                let counts = UncheckedBox(flops)
                let start = DispatchTime.now().uptimeNanoseconds
                pool.parallelFor(threads, minimumChunk: 1) { parts in
                    for p in parts { counts.value[p] = apus_fma_probe(iterations, base.value + p * 16) }
                }
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                best = max(best, (0..<threads).reduce(0) { $0 + flops[$1] } / seconds / 1e9)
            }
        }
        return best
    }

    /// Microseconds per thread-pool pass with almost no work in it (each of `threads`
    /// chunks touches one value), the median of many, after the workers are awake.
    public static func dispatchLatency(threads: Int) -> Double {
        guard threads > 1 else { return 0 }
        let pool = ThreadPool(threads: threads)
        var sink = [Int](repeating: 0, count: threads * 64)
        var samples: [Double] = []
        sink.withUnsafeMutableBufferPointer { buffer in
            let base = UncheckedBox(buffer.baseAddress!)
            for i in 0..<2000 {
                let start = DispatchTime.now().uptimeNanoseconds
                pool.parallelFor(threads, minimumChunk: 1) { parts in for p in parts { base.value[p * 64] &+= 1 } }
                if i >= 200 { samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e3) }
            }
        }
        return samples.sorted()[samples.count / 2]
    }

    /// Nanoseconds per (query head, position) of the attention kernel for `roof`'s heads,
    /// `tokens` queries (each its own sequence) against 512 positions, split over the
    /// threads as a decode step of that width splits them; best of several passes. Each
    /// pass reads the next of enough copies of the cache to overflow the last-level cache,
    /// so that its keys and values come from memory, as a step's do: there, one layer's
    /// cache is read again only after every other layer's and all the weights have passed
    /// (a cache-resident probe ran SmolLM2's attention a third faster than its steps did).
    public static func attentionNanoseconds(_ roof: AttentionRoof, tokens: Int, threads: Int) -> Double {
        let positions = 512, blockSize = 16, width = roof.kvHeads * roof.headDim, blocks = positions / blockSize
        var generator = SystemRandomNumberGenerator()
        func rows(_ format: KVCacheFormat, scale: Float) -> [UInt8] {
            if format.isPerChannel {  // whole blocks of kivi4 keys
                return (0..<(tokens * blocks)).flatMap { _ in
                    let keys = (0..<(blockSize * width)).map { _ in Float16(Float.random(in: -scale...scale, using: &generator)) }
                    return [UInt8](unsafeUninitializedCapacity: ChannelKeys.blockBytes(width: width)) { buffer, count in
                        keys.withUnsafeBufferPointer { ChannelKeys.quantize($0.baseAddress!, width: width, into: buffer.baseAddress!) }
                        count = buffer.count
                    }
                }
            }
            return (0..<(tokens * positions)).flatMap { _ in
                Quantization.quantize((0..<width).map { _ in Float.random(in: -scale...scale, using: &generator) }, format: format.tensorFormat)
            }
        }
        // A query reads its own block's kivi4 keys from staging: one block of them serves every table.
        let staged = UnsafeMutablePointer<Float16>.allocate(capacity: blockSize * width)
        staged.initialize(repeating: 0, count: blockSize * width)
        let stagedTable = UnsafeMutablePointer<UnsafeMutablePointer<Float16>?>.allocate(capacity: tokens * blocks)
        stagedTable.initialize(repeating: staged, count: tokens * blocks)
        defer {
            staged.deallocate()
            stagedTable.deallocate()
        }
        let keys = rows(roof.kv.keys, scale: 2), values = rows(roof.kv.values, scale: 1)
        let copies = max(2, (64 << 20) / (keys.count + values.count))
        let copiedKeys = [[UInt8]](repeating: keys, count: copies).flatMap { $0 }
        let copiedValues = [[UInt8]](repeating: values, count: copies).flatMap { $0 }
        let table = (0..<Int32(tokens * blocks)).map { $0 }
        let q = (0..<(tokens * roof.heads * roof.headDim)).map { _ in Float.random(in: -1...1, using: &generator) }
        var out = [Float](repeating: 0, count: q.count)
        let pool = ThreadPool(threads: threads)
        let shape = Attention.Shape(heads: roof.heads, kvHeads: roof.kvHeads, headDim: roof.headDim)
        var copy = 0
        return copiedKeys.withUnsafeBytes { k in
            copiedValues.withUnsafeBytes { v in
                table.withUnsafeBufferPointer { t in
                    let batch = (0..<tokens).map { Attention.Query(row: $0, position: positions - 1, blockTable: t.baseAddress! + $0 * blocks) }
                    let seconds = batch.withUnsafeBufferPointer { b in
                        fastestPass {
                            let layer = Attention.PagedLayer(keys: k.baseAddress! + copy * keys.count, values: v.baseAddress! + copy * values.count,
                                                             blockSize: blockSize, type: roof.kv, keyRowBytes: roof.kv.keys.rowBytes(width),
                                                             valueRowBytes: roof.kv.values.rowBytes(width),
                                                             stagedKeys: roof.kv.keys.isPerChannel ? Attention.StagedKeys(blocks: UnsafePointer(stagedTable), offset: 0) : nil)
                            copy = (copy + 1) % copies
                            Attention.causal(queries: q, batch: b, cache: layer, shape: shape, into: &out, pool: pool)
                        }
                    }
                    return seconds * 1e9 / Double(tokens * roof.heads * positions)
                }
            }
        }
    }

    /// Seconds per call of `pass` at its fastest: the mean over runs of at least 20 ms, the
    /// best of nine. A run of a few milliseconds catches this shared machine in whatever
    /// state it is in (the roofs of two such probes a minute apart differed by 40%); longer
    /// runs and more of them find what the kernel can do.
    static func fastestPass(_ pass: () -> Void) -> Double {
        pass()
        var best = Double.infinity
        for _ in 0..<9 {
            var calls = 0
            let start = DispatchTime.now().uptimeNanoseconds
            var elapsed: UInt64 = 0
            repeat {
                pass()
                calls += 1
                elapsed = DispatchTime.now().uptimeNanoseconds - start
            } while elapsed < 20_000_000
            best = min(best, Double(elapsed) / 1e9 / Double(calls))
        }
        return best
    }

    /// GOP/s of the matrix kernel for `roof` with `tokens` tokens, best of several passes,
    /// on a matrix of that format and shape that stays in cache after the first pass (at
    /// most 4M weights: a larger one keeps its width and is cut to fewer rows, since past a
    /// few milliseconds a pass's fixed costs no longer show; whole groups of 16 rows, as the
    /// kernels split them). A small matrix's pass is short
    /// enough that converting the activations, splitting the rows and waking the threads
    /// weigh on its rate (SmolLM2's 192 × 576 projections run at about half the rate of a
    /// 512 × 2048 matrix), and a large one's rate is higher than a small probe's.
    public static func matrixThroughput(_ roof: MatrixRoof, tokens: Int, threads: Int, precision: ActivationPrecision = .int8) -> Double {
        let format = roof.format, cols = roof.cols, rows = min(roof.rows, max(16, (4 << 20) / cols / 16 * 16))
        var generator = SystemRandomNumberGenerator()
        let values = (0..<(rows * cols)).map { _ in Float.random(in: -1...1, using: &generator) }
        var bytes = [UInt8](repeating: 0, count: rows * format.rowBytes(cols))
        values.withUnsafeBufferPointer { v in
            bytes.withUnsafeMutableBytes { out in
                for r in 0..<rows {
                    Quantization.quantize(v.baseAddress! + r * cols, count: cols, format: format, into: out.baseAddress! + r * format.rowBytes(cols))
                }
            }
        }
        let x = (0..<(tokens * cols)).map { _ in Float.random(in: -1...1, using: &generator) }
        var y = [Float](repeating: 0, count: tokens * rows)
        let pool = ThreadPool(threads: threads)
        var scratch = PreparedActivations()
        defer { scratch.release() }
        return bytes.withUnsafeBytes { raw in
            let w = WeightMatrix(format: format, rows: rows, cols: cols, data: raw.baseAddress!)
            return x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    let best = fastestPass {
                        MatMul.multiply(w, xp.baseAddress!, tokens: tokens, into: yp.baseAddress!, precision: precision, pool: pool, scratch: &scratch)
                    }
                    return 2 * Double(rows * cols * tokens) / best / 1e9
                }
            }
        }
    }
}

/// A matrix product as far as its speed goes: the weights' format and the matrix's shape.
public struct MatrixRoof: Sendable, Hashable {
    public var format: TensorFormat
    public var rows: Int
    public var cols: Int

    public init(format: TensorFormat, rows: Int, cols: Int) {
        self.format = format
        self.rows = rows
        self.cols = cols
    }

    /// Measured at 1, 2, 4, 8 and 16 tokens, as the attention roofs are.
    public func key(tokens: Int) -> String { "\(format.name) \(rows)×\(cols)@\(HardwareProfile.probedWidth(tokens))" }
}

/// The attention a model's layers run, as far as its speed goes: head size, query and KV
/// heads, and how the cache stores keys and values.
public struct AttentionRoof: Sendable, Hashable {
    public var headDim: Int
    public var heads: Int
    public var kvHeads: Int
    public var kv: KVCacheType

    public init(headDim: Int, heads: Int, kvHeads: Int, kv: KVCacheType) {
        self.headDim = headDim
        self.heads = heads
        self.kvHeads = kvHeads
        self.kv = kv
    }

    /// Measured at 1, 2, 4, 8 and 16 queries per step, as the matrix roofs are.
    public func key(tokens: Int) -> String { "d\(headDim) \(heads)/\(kvHeads) heads \(kv)@\(HardwareProfile.probedWidth(tokens))" }
}
