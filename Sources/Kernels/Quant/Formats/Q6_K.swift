import KernelsC

extension TensorFormat {
    public static let q6_K = TensorFormat(name: "Q6_K", ggmlType: 14, activationPartner: .q8_K, cKernel: Int32(APUS_Q6_K), layout: Q6_KLayout.self)
}

/// Q6_K: 256 values in sixteen groups of 16; 128 bytes of low nibbles, 64 bytes of high
/// bit pairs, sixteen signed 8-bit scales, `d: f16`; weight = d · scale_g · (q - 32).
/// Each half of 128 values is laid out as ggml's `dequantize_row_q6_K` reads it.
public enum Q6_KLayout: SuperBlockLayout {
    public static let blockValues = 256
    public static let blockBytes = 210

    /// Level (0...63) of value `i` of a block.
    @inline(__always) static func level(_ p: UnsafeRawPointer, _ i: Int) -> Int32 {
        let n = i / 128, k = (i % 128) / 32, l = i % 32
        let low = p.load(fromByteOffset: 64 * n + l + (k % 2) * 32, as: UInt8.self)
        let high = p.load(fromByteOffset: 128 + 32 * n + l, as: UInt8.self)
        return Int32(k < 2 ? low & 0xF : low >> 4) | Int32((high >> UInt8(2 * k)) & 3) << 4
    }

    @inline(__always) static func scale(_ p: UnsafeRawPointer, _ g: Int) -> Int32 { Int32(p.load(fromByteOffset: 192 + g, as: Int8.self)) }

    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * (group / 8), j = group % 8
        let n = j / 4, k = j % 4
        let low = p.loadUnaligned(fromByteOffset: 64 * n + (k % 2) * 32, as: SIMD32<UInt8>.self)
        let high = p.loadUnaligned(fromByteOffset: 128 + 32 * n, as: SIMD32<UInt8>.self)
        let q = (k < 2 ? low & 0x0F : low &>> 4) | (((high &>> UInt8(2 * k)) & 3) &<< 4)
        let lo = SIMD16<Int32>(truncatingIfNeeded: q.lowHalf) &- 32, hi = SIMD16<Int32>(truncatingIfNeeded: q.highHalf) &- 32
        // Two groups of sixteen with their own scales: the scales go into the integers.
        let s0 = scale(p, 2 * j), s1 = scale(p, 2 * j + 1)
        return UnpackedBlock(low: SIMD16<Float>(lo &* s0), high: SIMD16<Float>(hi &* s1), d: loadF16(p, 208), m: 0)
    }

    public static func integers(_ block: UnsafeRawPointer, q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Int32>,
                                mins: UnsafeMutablePointer<Int32>) -> (d: Float, dmin: Float) {
        for i in 0..<256 { q[i] = Int8(level(block, i) - 32) }
        for g in 0..<16 { scales[g] = scale(block, g); mins[g] = 0 }
        return (loadF16(block, 208), 0)
    }

    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        // Per sixteen values ggml's symmetric least-squares fit (`make_qx_quants`); the
        // sixteen scales then share one f16 `d` with 8-bit steps, the largest mapping to -128.
        var levels = [Int32](repeating: 0, count: 256)
        var groupScales = [Float](repeating: 0, count: 16)
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { fitted in
            for g in 0..<16 { groupScales[g] = SuperBlocks.fitSymmetric(x + 16 * g, count: 16, nmax: 32, levels: fitted.baseAddress! + 16 * g) }
            for i in 0..<256 { levels[i] = Int32(fitted[i]) }
        }
        var maxMagnitude: Float = 0, signedMaxScale: Float = 0
        for s in groupScales where abs(s) > maxMagnitude { maxMagnitude = abs(s); signedMaxScale = s }
        if maxMagnitude < SuperBlocks.groupMaxEpsilon {
            block.initializeMemory(as: UInt8.self, repeating: 0, count: blockBytes)
            return
        }
        let iscale = -128 / signedMaxScale
        storeF16(1 / iscale, block, 208)
        let d = loadF16(UnsafeRawPointer(block), 208)
        for g in 0..<16 {
            let sc = min(127, nearestInt(iscale * groupScales[g]))
            block.storeBytes(of: Int8(truncatingIfNeeded: sc), toByteOffset: 192 + g, as: Int8.self)
            let step = d * Float(Int8(truncatingIfNeeded: sc))
            if step == 0 { continue }
            for l in 0..<16 { levels[16 * g + l] = min(31, max(-32, nearestInt(x[16 * g + l] / step))) + 32 }
        }
        for n in 0..<2 {
            for l in 0..<32 {
                let q1 = levels[128 * n + l], q2 = levels[128 * n + 32 + l], q3 = levels[128 * n + 64 + l], q4 = levels[128 * n + 96 + l]
                block.storeBytes(of: UInt8(q1 & 0xF) | UInt8(q3 & 0xF) << 4, toByteOffset: 64 * n + l, as: UInt8.self)
                block.storeBytes(of: UInt8(q2 & 0xF) | UInt8(q4 & 0xF) << 4, toByteOffset: 64 * n + 32 + l, as: UInt8.self)
                block.storeBytes(of: UInt8(q1 >> 4) | UInt8(q2 >> 4) << 2 | UInt8(q3 >> 4) << 4 | UInt8(q4 >> 4) << 6,
                                 toByteOffset: 128 + 32 * n + l, as: UInt8.self)
            }
        }
    }

    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        let d = loadF16(block, 208)
        for i in 0..<256 { x[i] = d * Float(scale(block, i / 16)) * Float(level(block, i) - 32) }
    }
}
