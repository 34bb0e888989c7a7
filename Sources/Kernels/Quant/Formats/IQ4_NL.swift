import KernelsC

extension TensorFormat {
    public static let iq4_NL = TensorFormat(name: "IQ4_NL", ggmlType: 20, activationPartner: .q8_0, cKernel: Int32(APUS_IQ4_NL), layout: IQ4_NLLayout.self)
}

/// IQ4_NL: `d: f16`, 16 bytes of nibbles in Q4_0's order (byte `k` holds weight `k` low
/// and `k + 16` high); weight = d · values[nibble], with ggml's non-linear table.
public enum IQ4_NLLayout: WeightBlockLayout {
    public static let blockValues = 32
    public static let blockBytes = 18

    /// ggml's `kvalues_iq4nl` (`ggml-common.h`): sixteen signed levels, denser near zero.
    static let values: [Int8] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
    static let table = SIMD16<Float>(values.map(Float.init))

    /// The table entries of sixteen nibbles, as floats.
    @inline(__always) static func lookup(_ nibbles: SIMD16<Float>) -> SIMD16<Float> {
        var out = SIMD16<Float>()
        for j in 0..<16 { out[j] = table[Int(nibbles[j])] }
        return out
    }

    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * group
        let (lo, hi) = nibbles(p + 2)
        return UnpackedBlock(low: lookup(lo), high: lookup(hi), d: loadF16(p, 0), m: 0)
    }

    /// ggml's `quantize_row_iq4_nl_ref` rule: the value of largest magnitude maps to the
    /// table's -127, every value takes its nearest entry, then `d` becomes the least-squares
    /// fit `Σ w·q·x / Σ w·q²` with weights `x²` (ggml's C may fuse those products, so the
    /// last bit of `d` can differ).
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        var indices = [UInt8](repeating: 0, count: 32)
        let d = fitTable(x, count: 32, indices: &indices, leastSquares: true)
        storeF16(d, block, 0)
        for k in 0..<16 { block.storeBytes(of: indices[k] | indices[k + 16] << 4, toByteOffset: 2 + k, as: UInt8.self) }
    }

    /// Chooses a scale for `count` values against the table (from the value of largest
    /// magnitude, refined by least squares if asked) and each value's entry; an all-zero
    /// group (below ggml's `GROUP_MAX_EPS`) gets scale 0.
    static func fitTable(_ x: UnsafePointer<Float>, count: Int, indices: inout [UInt8], leastSquares: Bool) -> Float {
        var amax: Float = 0, signedMax: Float = 0
        for j in 0..<count where abs(x[j]) > amax { amax = abs(x[j]); signedMax = x[j] }
        for j in 0..<count { indices[j] = 0 }
        guard amax >= 1e-15 else { return 0 }
        let d = signedMax / Float(values[0])
        let id = 1 / d
        var sumqx: Float = 0, sumq2: Float = 0
        for j in 0..<count {
            let l = nearestEntry(id * x[j])
            indices[j] = l
            let q = Float(values[Int(l)]), w = x[j] * x[j]
            sumqx += w * q * x[j]
            sumq2 += w * q * q
        }
        guard leastSquares else { return d }
        return sumq2 > 0 ? sumqx / sumq2 : 0
    }

    /// ggml's `best_index_int8`: the nearest entry, the upper one on a tie.
    static func nearestEntry(_ x: Float) -> UInt8 {
        if x <= Float(values[0]) { return 0 }
        if x >= Float(values[15]) { return 15 }
        var lo = 0, hi = 15
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            if x < Float(values[mid]) { hi = mid } else { lo = mid }
        }
        return x - Float(values[hi - 1]) < Float(values[hi]) - x ? UInt8(hi - 1) : UInt8(hi)
    }

    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        let d = loadF16(block, 0)
        for k in 0..<16 {
            let byte = block.load(fromByteOffset: 2 + k, as: UInt8.self)
            x[k] = d * Float(values[Int(byte & 0xF)])
            x[k + 16] = d * Float(values[Int(byte >> 4)])
        }
    }
}
