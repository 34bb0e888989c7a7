import KernelsC

extension TensorFormat {
    public static let q8_0 = TensorFormat(name: "Q8_0", ggmlType: 8, activationPartner: .q8_0, cKernel: Int32(APUS_Q8_0), layout: Q8_0Layout.self)
}

/// Q8_0: `d: f16`, 32 signed bytes; weight = d * q.
public enum Q8_0Layout: WeightBlockLayout {
    public static let blockValues = 32
    public static let blockBytes = 34
    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + blockBytes * group
        let a = p.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
        let b = p.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
        return UnpackedBlock(low: SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: a)),
                             high: SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: b)), d: loadF16(p, 0), m: 0)
    }
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for j in 0..<32 { amax = max(amax, abs(x[j])) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        storeF16(d, block, 0)
        // C's roundf: ties away from zero.
        for j in 0..<32 { block.storeBytes(of: Int8((x[j] * id).rounded(.toNearestOrAwayFromZero)), toByteOffset: 2 + j, as: Int8.self) }
    }
    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        let d = loadF16(block, 0)
        for j in 0..<32 { x[j] = Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
    }
}
