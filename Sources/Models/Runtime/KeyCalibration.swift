import Kernels

/// How a cache of quantized keys (Q8_0, Q4_0, kivi4) stores a layer's keys, fitted to the
/// model once at load: per KV channel, a shift subtracted from every key after RoPE, and a
/// signed scale the key is divided by and every query that reads it multiplied by, before
/// Q8_0 and Q4_0 keys are rotated (`Hadamard`). For kivi4, whose channels have their own
/// scales and minimums, only the shift matters: it takes Qwen2.5's biases out of the keys.
///
/// Neither changes what attention computes. A query's scores against every position drop by
/// the same `q · shift`, which softmax cancels, and `(q s) · (k / s) = q · k`. What they
/// change is what a 32-value block of 4-bit keys has to hold:
/// - The shift is the channel's mean key (Qwen2.5's key biases, an outlier channel's fixed
///   offset), so a block's scale is set by how keys differ, not by what they all share.
/// - The scale balances keys against queries as SmoothQuant (Xiao et al. 2023) balances
///   activations against weights: with `s = (var k / E q²)^¼` a key's rounding error, which
///   the rotation spreads evenly over its channels, lands less where the queries are large.
/// - Its sign, a fixed ±1 per channel, makes the rotation a randomized Hadamard transform
///   (QuaRot), so structure left in the keys does not line up with the transform's rows.
///
/// Q4_0 keys and values, GPL-3 text at ctx 512: perplexity over f16 went from +6.8% to
/// +2.4% on SmolLM2-135M and from ×2.05 to +3% on Qwen2.5-Coder-0.5B
/// (`bench/2026-12-07-kv-key-calibration.md`).
struct KeyTransform: Sendable, Equatable {
    /// Per channel of the layer's keys (KV heads × head size).
    let shift: [Float]
    let scale: [Float]
    let inverseScale: [Float]

    init(shift: [Float], scale: [Float]) {
        self.shift = shift
        self.scale = scale
        inverseScale = scale.map { 1 / $0 }
    }

    /// `key = (key − shift) / scale`, for one position's keys.
    func apply(key: UnsafeMutablePointer<Float>) {
        for i in 0..<shift.count { key[i] = (key[i] - shift[i]) * inverseScale[i] }
    }

    /// Multiplies one position's `heads` query heads by the scale of the KV head each reads.
    func apply(query: UnsafeMutablePointer<Float>, heads: Int, headDim: Int) {
        let group = heads / (shift.count / headDim)
        for h in 0..<heads {
            let s = (h / group) * headDim
            for j in 0..<headDim { query[h * headDim + j] *= scale[s + j] }
        }
    }
}

/// Sums over the calibration positions, per layer and KV channel, of the keys after RoPE,
/// their squares, and the squared queries of the heads that read them; then the transforms
/// they give.
final class KeyStatistics {
    private let shape: TransformerShape
    private var keySums: [[Double]], keySquares: [[Double]], querySquares: [[Double]]
    private var positions: [Int]

    init(shape: TransformerShape) {
        self.shape = shape
        let zeros = [[Double]](repeating: [Double](repeating: 0, count: shape.kvWidth), count: shape.layers)
        (keySums, keySquares, querySquares) = (zeros, zeros, zeros)
        positions = [Int](repeating: 0, count: shape.layers)
    }

    /// Adds one position's keys (after RoPE, as the f16 cache holds them) and queries.
    func add(layer: Int, keys: UnsafePointer<Float16>, queries: UnsafePointer<Float>) {
        let group = shape.heads / shape.kvHeads, headDim = shape.headDim
        for i in 0..<shape.kvWidth {
            let k = Double(keys[i])
            keySums[layer][i] += k
            keySquares[layer][i] += k * k
        }
        for h in 0..<shape.heads {
            for j in 0..<headDim {
                let q = Double(queries[h * headDim + j])
                querySquares[layer][(h / group) * headDim + j] += q * q / Double(group)
            }
        }
        positions[layer] += 1
    }

    /// Each layer's transform. A channel whose keys or queries barely vary (below a
    /// ten-thousandth of the layer's mean) is held at that floor, so a dead channel neither
    /// blows up nor vanishes.
    func transforms() -> [KeyTransform] {
        (0..<shape.layers).map { layer in
            let n = Double(max(positions[layer], 1))
            let mean = keySums[layer].map { $0 / n }
            let variance = zip(keySquares[layer], mean).map { max($0 / n - $1 * $1, 0) }
            let query = querySquares[layer].map { $0 / n }
            let varianceFloor = 1e-4 * variance.reduce(0, +) / Double(variance.count)
            let queryFloor = 1e-4 * query.reduce(0, +) / Double(query.count)
            let scale = (0..<shape.kvWidth).map { i -> Float in
                let v = max(variance[i], varianceFloor), q = max(query[i], queryFloor)
                let magnitude = v > 0 && q > 0 ? Float((v / q).squareRoot().squareRoot()) : 1
                return Self.sign(channel: i) * magnitude
            }
            return KeyTransform(shift: mean.map { Float($0) }, scale: scale)
        }
    }

    /// A fixed pseudo-random sign per channel (Knuth's multiplicative hash, one bit of it).
    static func sign(channel: Int) -> Float {
        (UInt32(truncatingIfNeeded: channel) &* 2_654_435_761) >> 13 & 1 == 1 ? -1 : 1
    }
}

extension ModelRuntime {
    /// Positions of the calibration text a model's keys are fitted on: 256 gave the same
    /// perplexity as 512 and as 5,000 (`bench/2026-12-07-kv-key-calibration.md`), at half the
    /// load time of 512.
    static let calibrationPositions = 256

    /// Fits `keyTransforms` by running `forward` over `tokens` (at most
    /// `calibrationPositions` of them) with an f16 cache of their own.
    func calibrateKeys(tokens: [Int], forward: (ForwardBatch, PagedKVCache) throws -> [Float]) throws {
        let tokens = Array(tokens.prefix(Self.calibrationPositions))
        guard !tokens.isEmpty else { return }
        let blockSize = 16, blocks = (tokens.count + blockSize - 1) / blockSize
        let cache = PagedKVCache(layers: shape.layers, blockSize: blockSize, blockCount: blocks, rowWidth: shape.kvWidth, type: .f16)
        var batch = ForwardBatch()
        batch.append(tokens, firstPosition: 0, blockTable: (0..<blocks).map { Int32($0) }, logitsOfLast: 0)
        let statistics = KeyStatistics(shape: shape)
        keyStatistics = statistics
        defer { keyStatistics = nil }
        _ = try forward(batch, cache)
        keyTransforms = statistics.transforms()
    }

    /// A digest of the fitted transforms (0 without them): two caches agree on what their
    /// keys mean only when it is the same.
    var keyTransformDigest: UInt64 {
        guard let keyTransforms else { return 0 }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for transform in keyTransforms {
            for value in transform.shift + transform.scale {
                hash = (hash ^ UInt64(value.bitPattern)) &* 0x100_0000_01b3
            }
        }
        return hash
    }
}
