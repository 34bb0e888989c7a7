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
    /// reference scale (`quantize`, which maps the largest magnitude to -8), and six more that
    /// map it to ±7.8, ±8 or ±8.2 and then refit the scale by least squares to the levels chosen
    /// (llama.cpp searches Q4_0 scales the same way when it quantizes weights with an
    /// importance matrix). Never worse than the reference encoding, 8% less squared error on
    /// Gaussian blocks; for the KV cache (`KVCacheFormat.encode`), whose rotated keys are
    /// near-Gaussian (`bench/2026-12-07-kv-key-calibration.md`).
    public static func quantizeMinimizingError(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        var amax: Float = 0, signedMax: Float = 0
        for j in 0..<32 where amax < abs(x[j]) { amax = abs(x[j]); signedMax = x[j] }
        var best = Float(Float16(signedMax / -8))
        guard best != 0 else { return quantize(x, into: block) }
        var bestError = squaredError(x, scale: best)
        for step in -1...1 {
            for side in 0..<2 {
                let target = Float(side == 0 ? -1 : 1) * (8 + 0.2 * Float(step))
                let d = leastSquaresScale(x, levelsOf: target / amax)
                guard d != 0, d.isFinite else { continue }
                let error = squaredError(x, scale: d)
                if error < bestError { (best, bestError) = (d, error) }
            }
        }
        block.storeBytes(of: Float16(best).bitPattern.littleEndian, as: UInt16.self)
        let inverse = 1 / best
        for i in 0..<2 {
            let low = levels(eight(x, i) * inverse) + 8, high = levels(eight(x, i + 2) * inverse) + 8
            for j in 0..<8 { block.storeBytes(of: UInt8(low[j]) | UInt8(high[j]) << 4, toByteOffset: 2 + 8 * i + j, as: UInt8.self) }
        }
    }

    /// Eight values of `x` from `x[8 * i]`.
    @inline(__always) private static func eight(_ x: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
        UnsafeRawPointer(x + 8 * i).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// The Q4_0 levels nearest `v` (in units of the scale), within -8 … 7: rounded half to
    /// even by adding and taking away 1.5 · 2²³, and clamped by `replacing`, which stay
    /// vector code where Swift's `rounded` and `clamped` on a SIMD vector are calls.
    @inline(__always) private static func levels(_ v: SIMD8<Float>) -> SIMD8<Float> {
        let magic = SIMD8<Float>(repeating: 12_582_912)
        let r = (v + magic) - magic
        return r.replacing(with: 7, where: r .> 7).replacing(with: -8, where: r .< -8)
    }

    /// The scale, rounded to f16, that best fits `x` to the levels `x * inverse` picks.
    @inline(__always) private static func leastSquaresScale(_ x: UnsafePointer<Float>, levelsOf inverse: Float) -> Float {
        var xq = SIMD8<Float>(), qq = SIMD8<Float>()
        for i in 0..<4 {
            let v = eight(x, i), q = levels(v * inverse)
            xq += v * q
            qq += q * q
        }
        return Float(Float16(xq.sum() / qq.sum()))
    }

    /// Σ (x − d · level(x / d))² over the block.
    @inline(__always) private static func squaredError(_ x: UnsafePointer<Float>, scale d: Float) -> Float {
        let inverse = 1 / d
        var sum = SIMD8<Float>()
        for i in 0..<4 {
            let v = eight(x, i), e = v - d * levels(v * inverse)
            sum += e * e
        }
        return sum.sum()
    }
}
