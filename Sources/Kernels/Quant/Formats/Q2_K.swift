import KernelsC

extension TensorFormat {
    public static let q2_K = TensorFormat(name: "Q2_K", ggmlType: 10, activationPartner: .q8_K, cKernel: Int32(APUS_Q2_K), layout: Q2_KLayout.self)
}

/// Q2_K: 256 values in sixteen groups of 16; sixteen bytes of 4-bit scales (low nibble)
/// and minima (high nibble), 64 bytes of 2-bit levels, `d: f16`, `dmin: f16`;
/// weight = d · scale_g · q - dmin · min_g. Each half of 128 values takes 32 bytes: value
/// `32·k + l` of the half is bits `2k, 2k+1` of byte `l` (ggml's `dequantize_row_q2_K`).
public enum Q2_KLayout: SuperBlockLayout {
    public static let blockValues = 256
    public static let blockBytes = 84

    /// Level (0...3) of value `i` of a block.
    @inline(__always) static func level(_ p: UnsafeRawPointer, _ i: Int) -> UInt8 {
        let n = i / 128, k = (i % 128) / 32, l = i % 32
        return (p.load(fromByteOffset: 16 + 32 * n + l, as: UInt8.self) >> UInt8(2 * k)) & 3
    }

    @inline(__always) static func scaleByte(_ p: UnsafeRawPointer, _ g: Int) -> UInt8 { p.load(fromByteOffset: g, as: UInt8.self) }

    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * (group / 8), j = group % 8
        let n = j / 4, k = j % 4
        let q = (p.loadUnaligned(fromByteOffset: 16 + 32 * n, as: SIMD32<UInt8>.self) &>> UInt8(2 * k)) & 3
        let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.lowHalf)), hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.highHalf))
        // The two sixteens of a group have their own minima, which one `m` cannot carry: the
        // group unpacks to its decoded values (d = 1), with `dequantize`'s arithmetic.
        let d = loadF16(p, 80), dmin = loadF16(p, 82)
        let s0 = scaleByte(p, 2 * j), s1 = scaleByte(p, 2 * j + 1)
        let low = (d * Float(s0 & 0xF)) * lo - dmin * Float(s0 >> 4)
        let high = (d * Float(s1 & 0xF)) * hi - dmin * Float(s1 >> 4)
        return UnpackedBlock(low: low, high: high, d: 1, m: 0)
    }

    public static func integers(_ block: UnsafeRawPointer, q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Int32>,
                                mins: UnsafeMutablePointer<Int32>) -> (d: Float, dmin: Float) {
        for i in 0..<256 { q[i] = Int8(level(block, i)) }
        for g in 0..<16 {
            let s = scaleByte(block, g)
            scales[g] = Int32(s & 0xF)
            mins[g] = Int32(s >> 4)
        }
        return (loadF16(block, 80), loadF16(block, 82))
    }

    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        // A plain min/max quantizer per sixteen (scale = range / 3, minimum = -min(0, lo)),
        // both rounded to 4 bits against the largest in the super-block, as ggml's
        // `quantize_row_q2_K_ref` does after its `make_qkx2_quants` search, which this skips.
        var groupScales = [Float](repeating: 0, count: 16), groupMins = [Float](repeating: 0, count: 16)
        for g in 0..<16 {
            var lo: Float = 0, hi = -Float.greatestFiniteMagnitude
            for l in 0..<16 { lo = min(lo, x[16 * g + l]); hi = max(hi, x[16 * g + l]) }
            groupScales[g] = max(hi - lo, 0) / 3
            groupMins[g] = -lo
        }
        let maxScale = groupScales.max()!, maxMin = groupMins.max()!
        let iscale: Float = maxScale > 0 ? 15 / maxScale : 0, imin: Float = maxMin > 0 ? 15 / maxMin : 0
        storeF16(maxScale > 0 ? maxScale / 15 : 0, block, 80)
        storeF16(maxMin > 0 ? maxMin / 15 : 0, block, 82)
        for g in 0..<16 {
            let ls = min(15, nearestInt(iscale * groupScales[g])), lm = min(15, nearestInt(imin * groupMins[g]))
            block.storeBytes(of: UInt8(ls) | UInt8(lm) << 4, toByteOffset: g, as: UInt8.self)
        }
        let d = loadF16(UnsafeRawPointer(block), 80), dmin = loadF16(UnsafeRawPointer(block), 82)
        var levels = [UInt8](repeating: 0, count: 256)
        for g in 0..<16 {
            let s = scaleByte(UnsafeRawPointer(block), g)
            let step = d * Float(s & 0xF), offset = dmin * Float(s >> 4)
            for l in 0..<16 where step != 0 { levels[16 * g + l] = UInt8(min(3, max(0, nearestInt((x[16 * g + l] + offset) / step)))) }
        }
        for n in 0..<2 {
            for l in 0..<32 {
                var byte: UInt8 = 0
                for k in 0..<4 { byte |= levels[128 * n + 32 * k + l] << UInt8(2 * k) }
                block.storeBytes(of: byte, toByteOffset: 16 + 32 * n + l, as: UInt8.self)
            }
        }
    }

    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        let d = loadF16(block, 80), dmin = loadF16(block, 82)
        for g in 0..<16 {
            let s = scaleByte(block, g)
            let step = d * Float(s & 0xF), offset = dmin * Float(s >> 4)
            for l in 0..<16 { x[16 * g + l] = step * Float(level(block, 16 * g + l)) - offset }
        }
    }
}
