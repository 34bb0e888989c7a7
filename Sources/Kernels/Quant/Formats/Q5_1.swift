import KernelsC

extension TensorFormat {
    public static let q5_1 = TensorFormat(name: "Q5_1", ggmlType: 7, activationPartner: .q8_1, cKernel: Int32(APUS_Q5_1), layout: Q5_1Layout.self)
}

/// Q5_1: `d: f16`, `m: f16`, `qh: u32`, 16 bytes of nibbles; weight = d * q + m.
public enum Q5_1Layout: WeightBlockLayout {
    public static let blockValues = 32
    public static let blockBytes = 24
    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * group
        let (lo, hi) = nibbles(p + 8)
        let (bl, bh) = fifthBits(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        return UnpackedBlock(low: lo + bl, high: hi + bh, d: loadF16(p, 0), m: loadF16(p, 2))
    }
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        LegacyBlocks.encodeWithMinimum(x, steps: 31, into: block, nibblesAt: 8, fifthBitsAt: 4)
    }
    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        LegacyBlocks.decode(block, into: x, nibblesAt: 8, fifthBitsAt: 4, offset: 0, minimumAt: 2)
    }
}
