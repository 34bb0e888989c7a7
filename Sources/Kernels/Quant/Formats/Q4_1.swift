import KernelsC

extension TensorFormat {
    public static let q4_1 = TensorFormat(name: "Q4_1", ggmlType: 3, activationPartner: .q8_1, cKernel: Int32(APUS_Q4_1), layout: Q4_1Layout.self)
}

/// Q4_1: `d: f16`, `m: f16`, 16 bytes of nibbles; weight = d * q + m.
public enum Q4_1Layout: WeightBlockLayout {
    public static let blockValues = 32
    public static let blockBytes = 20
    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * group
        let (lo, hi) = nibbles(p + 4)
        return UnpackedBlock(low: lo, high: hi, d: loadF16(p, 0), m: loadF16(p, 2))
    }
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        LegacyBlocks.encodeWithMinimum(x, steps: 15, into: block, nibblesAt: 4, fifthBitsAt: nil)
    }
    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        LegacyBlocks.decode(block, into: x, nibblesAt: 4, fifthBitsAt: nil, offset: 0, minimumAt: 2)
    }
}
