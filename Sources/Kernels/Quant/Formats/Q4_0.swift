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
}
