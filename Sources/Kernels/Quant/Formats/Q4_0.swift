import KernelsC

extension TensorFormat {
    public static let q4_0 = TensorFormat(name: "Q4_0", ggmlType: 2, activationPartner: .q8_0, cKernel: Int32(APUS_Q4_0), layout: Q4_0Layout.self)
}

/// Q4_0: `d: f16`, 16 bytes of nibbles; weight = d * (q - 8).
public enum Q4_0Layout: WeightBlockLayout {
    public static let blockValues = 32
    public static let blockBytes = 18
    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * group
        let (lo, hi) = nibbles(p + 2)
        return UnpackedBlock(low: lo - 8, high: hi - 8, d: loadF16(p, 0), m: 0)
    }
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        LegacyBlocks.encodeSymmetric(x, levels: 8, into: block, nibblesAt: 2, fifthBitsAt: nil)
    }
    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        LegacyBlocks.decode(block, into: x, nibblesAt: 2, fifthBitsAt: nil, offset: 8, minimumAt: nil)
    }

    /// A Q4_0 block with the scale of least squared error among a few candidates: the
    /// reference scale (`quantize`, which maps the largest magnitude to -8), and ten more that
    /// map it to ±7.6 … ±8.4 and then refit the scale by least squares to the levels chosen
    /// (llama.cpp searches Q4_0 scales the same way when it quantizes weights with an
    /// importance matrix). Never worse than the reference encoding, 10% less squared error on
    /// Gaussian blocks; for the KV cache (`KVCacheFormat.encode`), whose rotated keys are
    /// near-Gaussian (`bench/2026-12-07-kv-key-calibration.md`).
    public static func quantizeMinimizingError(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        var amax: Float = 0, signedMax: Float = 0
        for j in 0..<32 where amax < abs(x[j]) { amax = abs(x[j]); signedMax = x[j] }
        var best = Float(Float16(signedMax / -8))
        guard best != 0 else { return quantize(x, into: block) }
        var bestError = squaredError(x, scale: best)
        for target: Float in [7.6, 7.8, 8, 8.2, 8.4] {
            for sign: Float in [-1, 1] {
                let d = leastSquaresScale(x, levelsOf: sign * target / amax)
                guard d != 0, d.isFinite else { continue }
                let error = squaredError(x, scale: d)
                if error < bestError { (best, bestError) = (d, error) }
            }
        }
        block.storeBytes(of: Float16(best).bitPattern.littleEndian, as: UInt16.self)
        let inverse = 1 / best
        for j in 0..<16 {
            let low = UInt8(level(x[j] * inverse) + 8), high = UInt8(level(x[j + 16] * inverse) + 8)
            block.storeBytes(of: low | high << 4, toByteOffset: 2 + j, as: UInt8.self)
        }
    }

    /// The Q4_0 level nearest `v` (in units of the scale), within -8 … 7.
    @inline(__always) private static func level(_ v: Float) -> Float { min(7, max(-8, v.rounded(.toNearestOrEven))) }

    /// The scale, rounded to f16, that best fits `x` to the levels `x * inverse` picks.
    @inline(__always) private static func leastSquaresScale(_ x: UnsafePointer<Float>, levelsOf inverse: Float) -> Float {
        var xq: Float = 0, qq: Float = 0
        for j in 0..<32 {
            let q = level(x[j] * inverse)
            xq += x[j] * q
            qq += q * q
        }
        return Float(Float16(xq / qq))
    }

    /// Σ (x − d · level(x / d))² over the block.
    @inline(__always) private static func squaredError(_ x: UnsafePointer<Float>, scale d: Float) -> Float {
        let inverse = 1 / d
        var sum: Float = 0
        for j in 0..<32 {
            let e = x[j] - d * level(x[j] * inverse)
            sum += e * e
        }
        return sum
    }
}
