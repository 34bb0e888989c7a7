import KernelsC

extension TensorFormat {
    public static let q5_K = TensorFormat(name: "Q5_K", ggmlType: 13, activationPartner: .q8_K, cKernel: Int32(APUS_Q5_K), layout: Q5_KLayout.self)
}

/// Q5_K: Q4_K's layout plus 32 bytes of fifth bits before the nibbles (`qh[l]` bit `g`
/// is the fifth bit of value `32·g + l`); weight = d · scale_g · q - dmin · min_g.
public enum Q5_KLayout: SuperBlockLayout {
    public static let blockValues = 256
    public static let blockBytes = 176

    @inline(__always) static func value(_ p: UnsafeRawPointer, _ j: Int, _ l: Int) -> UInt8 {
        let byte = p.load(fromByteOffset: 48 + 32 * (j / 2) + l, as: UInt8.self)
        let high = (p.load(fromByteOffset: 16 + l, as: UInt8.self) >> UInt8(j)) & 1
        return (j % 2 == 0 ? byte & 0xF : byte >> 4) | high << 4
    }

    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * (group / 8), j = group % 8
        let (sc, m) = SuperBlocks.scaleAndMin(j, p + 4)
        let v = p.loadUnaligned(fromByteOffset: 48 + 32 * (j / 2), as: SIMD32<UInt8>.self)
        let qh = (p.loadUnaligned(fromByteOffset: 16, as: SIMD32<UInt8>.self) &>> UInt8(j)) & 1
        let q = (j % 2 == 0 ? v & 0x0F : v &>> 4) | (qh &<< 4)
        let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.lowHalf)), hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.highHalf))
        return UnpackedBlock(low: lo, high: hi, d: loadF16(p, 0) * Float(sc), m: -(loadF16(p, 2) * Float(m)))
    }

    public static func integers(_ block: UnsafeRawPointer, q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Int32>,
                                mins: UnsafeMutablePointer<Int32>) -> (d: Float, dmin: Float) {
        for j in 0..<8 {
            let (sc, m) = SuperBlocks.scaleAndMin(j, block + 4)
            scales[2 * j] = sc; scales[2 * j + 1] = sc
            mins[2 * j] = m; mins[2 * j + 1] = m
            for l in 0..<32 { q[32 * j + l] = Int8(value(block, j, l)) }
        }
        return (loadF16(block, 0), loadF16(block, 2))
    }

    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        let q = SuperBlocks.encodeAffine(x, nmax: 31, rmin: -0.5, steps: 15, into: block)
        for l in 0..<32 {
            var high: UInt8 = 0
            for j in 0..<8 { high |= UInt8(q[32 * j + l] >> 4) << UInt8(j) }
            block.storeBytes(of: high, toByteOffset: 16 + l, as: UInt8.self)
        }
        for n in 0..<4 {
            for l in 0..<32 {
                block.storeBytes(of: UInt8(q[64 * n + l] & 0xF) | UInt8(q[64 * n + 32 + l] & 0xF) << 4, toByteOffset: 48 + 32 * n + l, as: UInt8.self)
            }
        }
    }

    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        let d = loadF16(block, 0), dmin = loadF16(block, 2)
        for j in 0..<8 {
            let (sc, m) = SuperBlocks.scaleAndMin(j, block + 4)
            let step = d * Float(sc), offset = dmin * Float(m)
            for l in 0..<32 { x[32 * j + l] = step * Float(value(block, j, l)) - offset }
        }
    }
}
