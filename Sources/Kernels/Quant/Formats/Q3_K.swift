import KernelsC

extension TensorFormat {
    public static let q3_K = TensorFormat(name: "Q3_K", ggmlType: 11, activationPartner: .q8_K, cKernel: Int32(APUS_Q3_K), layout: Q3_KLayout.self)
}

/// Q3_K: 256 values in sixteen groups of 16; 32 bytes of high bits (`hmask[l]` bit `h` is
/// the high bit of value `32·h + l`), 64 bytes of 2-bit low parts laid out as Q2_K's,
/// twelve bytes of 6-bit scales, `d: f16`; weight = d · (scale_g - 32) · q with
/// q = low - 4 where the high bit is clear, else low (ggml's `dequantize_row_q3_K`).
public enum Q3_KLayout: SuperBlockLayout {
    public static let blockValues = 256
    public static let blockBytes = 110

    /// q (-4...3) of value `i` of a block.
    @inline(__always) static func value(_ p: UnsafeRawPointer, _ i: Int) -> Int32 {
        let n = i / 128, k = (i % 128) / 32, l = i % 32
        let low = Int32((p.load(fromByteOffset: 32 + 32 * n + l, as: UInt8.self) >> UInt8(2 * k)) & 3)
        let high = (p.load(fromByteOffset: l, as: UInt8.self) >> UInt8(i / 32)) & 1
        return high == 0 ? low - 4 : low
    }

    /// Scale `g` (-32...31): four low bits from bytes 0..<8 (groups 8... in the high
    /// nibbles), two high bits from bytes 8..<12 (ggml's `kmask` unpacking, written out).
    @inline(__always) static func scale(_ p: UnsafeRawPointer, _ g: Int) -> Int32 {
        let s = p + 96
        let low = g < 8 ? s.load(fromByteOffset: g, as: UInt8.self) & 0xF : s.load(fromByteOffset: g - 8, as: UInt8.self) >> 4
        let high = (s.load(fromByteOffset: 8 + g % 4, as: UInt8.self) >> UInt8(2 * (g / 4))) & 3
        return Int32(low | high << 4) - 32
    }

    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * (group / 8), j = group % 8
        let n = j / 4, k = j % 4
        let low = (p.loadUnaligned(fromByteOffset: 32 + 32 * n, as: SIMD32<UInt8>.self) &>> UInt8(2 * k)) & 3
        let high = (p.loadUnaligned(as: SIMD32<UInt8>.self) &>> UInt8(j)) & 1
        // High bit clear: low - 4; set: low.
        let q = SIMD32<Int8>(truncatingIfNeeded: low | (high &<< 2)) &- 4
        // Two groups of sixteen with their own scales: the scales go into the integers.
        let lo = SIMD16<Int32>(truncatingIfNeeded: q.lowHalf) &* scale(p, 2 * j)
        let hi = SIMD16<Int32>(truncatingIfNeeded: q.highHalf) &* scale(p, 2 * j + 1)
        return UnpackedBlock(low: SIMD16<Float>(lo), high: SIMD16<Float>(hi), d: loadF16(p, 108), m: 0)
    }

    public static func integers(_ block: UnsafeRawPointer, q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Int32>,
                                mins: UnsafeMutablePointer<Int32>) -> (d: Float, dmin: Float) {
        for i in 0..<256 { q[i] = Int8(value(block, i)) }
        for g in 0..<16 { scales[g] = scale(block, g); mins[g] = 0 }
        return (loadF16(block, 108), 0)
    }

    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        // Per sixteen values the symmetric choice (the value of largest magnitude maps to -4)
        // instead of ggml's `make_q3_quants` search; the scales then map as in
        // `quantize_row_q3_K_ref`: the one of largest magnitude to -32, one f16 `d`.
        var groupScales = [Float](repeating: 0, count: 16)
        for g in 0..<16 {
            var amax: Float = 0, signedMax: Float = 0
            for l in 0..<16 where abs(x[16 * g + l]) > amax { amax = abs(x[16 * g + l]); signedMax = x[16 * g + l] }
            groupScales[g] = signedMax / -4
        }
        var amax: Float = 0, maxScale: Float = 0
        for s in groupScales where abs(s) > amax { amax = abs(s); maxScale = s }
        for i in 0..<110 { block.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
        var levels = [Int32](repeating: 0, count: 256)  // 0...7, q + 4
        if maxScale != 0 {
            let iscale = -32 / maxScale
            let s = block + 96
            for g in 0..<16 {
                let l = UInt8(min(31, max(-32, nearestInt(iscale * groupScales[g]))) + 32)
                if g < 8 {
                    s.storeBytes(of: l & 0xF, toByteOffset: g, as: UInt8.self)
                } else {
                    s.storeBytes(of: s.load(fromByteOffset: g - 8, as: UInt8.self) | (l & 0xF) << 4, toByteOffset: g - 8, as: UInt8.self)
                }
                s.storeBytes(of: s.load(fromByteOffset: 8 + g % 4, as: UInt8.self) | (l >> 4) << UInt8(2 * (g / 4)),
                             toByteOffset: 8 + g % 4, as: UInt8.self)
            }
            storeF16(1 / iscale, block, 108)
            let d = loadF16(UnsafeRawPointer(block), 108)
            for g in 0..<16 {
                let step = d * Float(scale(UnsafeRawPointer(block), g))
                for l in 0..<16 where step != 0 { levels[16 * g + l] = min(3, max(-4, nearestInt(x[16 * g + l] / step))) + 4 }
            }
        }
        for i in 0..<256 where levels[i] > 3 {
            let l = i % 32
            block.storeBytes(of: block.load(fromByteOffset: l, as: UInt8.self) | 1 << UInt8(i / 32), toByteOffset: l, as: UInt8.self)
        }
        for n in 0..<2 {
            for l in 0..<32 {
                var byte: UInt8 = 0
                for k in 0..<4 { byte |= UInt8(levels[128 * n + 32 * k + l] & 3) << UInt8(2 * k) }
                block.storeBytes(of: byte, toByteOffset: 32 + 32 * n + l, as: UInt8.self)
            }
        }
    }

    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        let d = loadF16(block, 108)
        for g in 0..<16 {
            let step = d * Float(scale(block, g))
            for l in 0..<16 { x[16 * g + l] = step * Float(value(block, 16 * g + l)) }
        }
    }
}
