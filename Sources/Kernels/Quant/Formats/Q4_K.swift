import KernelsC

extension TensorFormat {
    public static let q4_K = TensorFormat(name: "Q4_K", ggmlType: 12, activationPartner: .q8_K, cKernel: Int32(APUS_Q4_K), layout: Q4_KLayout.self)
}

/// Q4_K: 256 values in eight groups of 32; `d: f16`, `dmin: f16`, twelve bytes of 6-bit
/// scales and minima, 128 bytes of nibbles (each 64 values: byte `l` holds value `l` low
/// and `l + 32` high); weight = d · scale_g · q - dmin · min_g.
public enum Q4_KLayout: SuperBlockLayout {
    public static let blockValues = 256
    public static let blockBytes = 144

    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * (group / 8), j = group % 8
        let (sc, m) = SuperBlocks.scaleAndMin(j, p + 4)
        let v = p.loadUnaligned(fromByteOffset: 16 + 32 * (j / 2), as: SIMD32<UInt8>.self)
        let q = j % 2 == 0 ? v & 0x0F : v &>> 4
        let lo = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.lowHalf)), hi = SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: q.highHalf))
        return UnpackedBlock(low: lo, high: hi, d: loadF16(p, 0) * Float(sc), m: -(loadF16(p, 2) * Float(m)))
    }

    public static func integers(_ block: UnsafeRawPointer, q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Int32>,
                                mins: UnsafeMutablePointer<Int32>) -> (d: Float, dmin: Float) {
        for j in 0..<8 {
            let (sc, m) = SuperBlocks.scaleAndMin(j, block + 4)
            scales[2 * j] = sc; scales[2 * j + 1] = sc
            mins[2 * j] = m; mins[2 * j + 1] = m
            for l in 0..<32 {
                let byte = block.load(fromByteOffset: 16 + 32 * (j / 2) + l, as: UInt8.self)
                q[32 * j + l] = Int8(j % 2 == 0 ? byte & 0xF : byte >> 4)
            }
        }
        return (loadF16(block, 0), loadF16(block, 2))
    }

    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        let q = SuperBlocks.encodeAffine(x, nmax: 15, rmin: -1, steps: 20, into: block)
        for n in 0..<4 {
            for l in 0..<32 {
                block.storeBytes(of: UInt8(q[64 * n + l]) | UInt8(q[64 * n + 32 + l]) << 4, toByteOffset: 16 + 32 * n + l, as: UInt8.self)
            }
        }
    }

    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        let d = loadF16(block, 0), dmin = loadF16(block, 2)
        for j in 0..<8 {
            let (sc, m) = SuperBlocks.scaleAndMin(j, block + 4)
            let step = d * Float(sc), offset = dmin * Float(m)
            for l in 0..<32 {
                let byte = block.load(fromByteOffset: 16 + 32 * (j / 2) + l, as: UInt8.self)
                x[32 * j + l] = step * Float(j % 2 == 0 ? byte & 0xF : byte >> 4) - offset
            }
        }
    }
}
