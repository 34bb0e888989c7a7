import KernelsC

extension TensorFormat {
    public static let q5_0 = TensorFormat(name: "Q5_0", ggmlType: 6, activationPartner: .q8_0, cKernel: Int32(APUS_Q5_0), layout: Q5_0Layout.self)
}

/// Q5_0: `d: f16`, `qh: u32`, 16 bytes of nibbles; weight = d * (q - 16).
public enum Q5_0Layout: WeightBlockLayout {
    public static let blockValues = 32
    public static let blockBytes = 22
    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * group
        let (lo, hi) = nibbles(p + 6)
        let (bl, bh) = fifthBits(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)))
        return UnpackedBlock(low: lo + bl - 16, high: hi + bh - 16, d: loadF16(p, 0), m: 0)
    }
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        LegacyBlocks.encodeSymmetric(x, levels: 16, into: block, nibblesAt: 6, fifthBitsAt: 2)
    }
    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        LegacyBlocks.decode(block, into: x, nibblesAt: 6, fifthBitsAt: 2, offset: 16, minimumAt: nil)
    }
}
