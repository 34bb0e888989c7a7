import KernelsC

extension TensorFormat {
    public static let iq4_XS = TensorFormat(name: "IQ4_XS", ggmlType: 23, activationPartner: .q8_K, cKernel: Int32(APUS_IQ4_XS), layout: IQ4_XSLayout.self)
}

/// IQ4_XS: 256 values in eight groups of 32; `d: f16`, the scales' high bit pairs in a
/// little-endian `UInt16` (bits `2g, 2g+1` for group `g`), their low nibbles in four bytes
/// (group `g` in byte `g/2`, low nibble for even `g`), then 128 bytes of IQ4_NL nibbles
/// (each group of 32 as one IQ4_NL block); weight = d · (scale_g - 32) · values[nibble]
/// (ggml's `dequantize_row_iq4_xs`).
public enum IQ4_XSLayout: SuperBlockLayout {
    public static let blockValues = 256
    public static let blockBytes = 136

    /// Scale of group `g` (-32...31).
    @inline(__always) static func scale(_ p: UnsafeRawPointer, _ g: Int) -> Int32 {
        let high = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        let low = (p.load(fromByteOffset: 4 + g / 2, as: UInt8.self) >> UInt8(4 * (g % 2))) & 0xF
        return (Int32(low) | Int32((high >> UInt16(2 * g)) & 3) << 4) - 32
    }

    /// Table index of value `i` of a block.
    @inline(__always) static func index(_ p: UnsafeRawPointer, _ i: Int) -> Int {
        let byte = p.load(fromByteOffset: 8 + 16 * (i / 32) + i % 16, as: UInt8.self)
        return Int(i % 32 < 16 ? byte & 0xF : byte >> 4)
    }

    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * (group / 8), j = group % 8
        let (lo, hi) = nibbles(p + 8 + 16 * j)
        return UnpackedBlock(low: IQ4_NLLayout.lookup(lo), high: IQ4_NLLayout.lookup(hi), d: loadF16(p, 0) * Float(scale(p, j)), m: 0)
    }

    public static func integers(_ block: UnsafeRawPointer, q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Int32>,
                                mins: UnsafeMutablePointer<Int32>) -> (d: Float, dmin: Float) {
        for i in 0..<256 { q[i] = IQ4_NLLayout.values[index(block, i)] }
        for g in 0..<8 {
            scales[2 * g] = scale(block, g); scales[2 * g + 1] = scales[2 * g]
            mins[2 * g] = 0; mins[2 * g + 1] = 0
        }
        return (loadF16(block, 0), 0)
    }

    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        // Per group IQ4_NL's scale (largest value to -127, nearest entries, least squares);
        // then as ggml's `quantize_row_iq4_nl_impl`: the scale of largest magnitude maps to
        // -32, one f16 `d`, and the entries are chosen again against the rounded scale.
        // ggml also tries fourteen nearby scales per group and keeps the best; this does not.
        var indices = [UInt8](repeating: 0, count: 32)
        var groupScales = [Float](repeating: 0, count: 8)
        for g in 0..<8 { groupScales[g] = IQ4_NLLayout.fitTable(x + 32 * g, count: 32, indices: &indices, leastSquares: true) }
        var amax: Float = 0, maxScale: Float = 0
        for s in groupScales where abs(s) > amax { amax = abs(s); maxScale = s }
        let d = -maxScale / 32
        storeF16(d, block, 0)
        let id: Float = d != 0 ? 1 / d : 0
        var high: UInt16 = 0
        for g in 0..<8 {
            let l = min(31, max(-32, nearestInt(id * groupScales[g])))
            let dl = d * Float(l)
            let idl: Float = dl != 0 ? 1 / dl : 0
            for j in 0..<32 { indices[j] = IQ4_NLLayout.nearestEntry(idl * x[32 * g + j]) }
            for k in 0..<16 { block.storeBytes(of: indices[k] | indices[k + 16] << 4, toByteOffset: 8 + 16 * g + k, as: UInt8.self) }
            let stored = UInt8(l + 32)
            let at = 4 + g / 2
            let previous: UInt8 = g % 2 == 0 ? 0 : block.load(fromByteOffset: at, as: UInt8.self)
            block.storeBytes(of: previous | (stored & 0xF) << UInt8(4 * (g % 2)), toByteOffset: at, as: UInt8.self)
            high |= UInt16(stored >> 4) << UInt16(2 * g)
        }
        block.storeBytes(of: high.littleEndian, toByteOffset: 2, as: UInt16.self)
    }

    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        let d = loadF16(block, 0)
        for g in 0..<8 {
            let step = d * Float(scale(block, g))
            for j in 0..<32 { x[32 * g + j] = step * Float(IQ4_NLLayout.values[index(block, 32 * g + j)]) }
        }
    }
}
