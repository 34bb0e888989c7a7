extension TensorFormat {
    public static let f32 = TensorFormat(name: "F32", ggmlType: 0, activationPartner: .f32, cKernel: nil, layout: F32Layout.self)
    public static let f16 = TensorFormat(name: "F16", ggmlType: 1, activationPartner: .f16, cKernel: nil, layout: F16Layout.self)
    public static let bf16 = TensorFormat(name: "BF16", ggmlType: 30, activationPartner: .bf16, cKernel: nil, layout: BF16Layout.self)
}

/// F32: little-endian IEEE single.
public enum F32Layout: WeightBlockLayout {
    public static let blockValues = 1
    public static let blockBytes = 4
    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + 128 * group
        return UnpackedBlock(low: p.loadUnaligned(as: SIMD16<Float>.self),
                             high: p.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self), d: 1, m: 0)
    }
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        block.storeBytes(of: x[0].bitPattern.littleEndian, as: UInt32.self)
    }
    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        x[0] = Float(bitPattern: UInt32(littleEndian: block.loadUnaligned(as: UInt32.self)))
    }
}

/// F16: IEEE half.
public enum F16Layout: WeightBlockLayout {
    public static let blockValues = 1
    public static let blockBytes = 2
    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + 64 * group
        return UnpackedBlock(low: SIMD16<Float>(p.loadUnaligned(as: SIMD16<Float16>.self)),
                             high: SIMD16<Float>(p.loadUnaligned(fromByteOffset: 32, as: SIMD16<Float16>.self)), d: 1, m: 0)
    }
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) { storeF16(x[0], block, 0) }
    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) { x[0] = loadF16(block, 0) }
}

/// BF16: the upper half of an IEEE single.
public enum BF16Layout: WeightBlockLayout {
    public static let blockValues = 1
    public static let blockBytes = 2
    @inline(__always) public static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock {
        let p = row + 64 * group
        let a = SIMD16<UInt32>(truncatingIfNeeded: p.loadUnaligned(as: SIMD16<UInt16>.self)) &<< 16
        let b = SIMD16<UInt32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 32, as: SIMD16<UInt16>.self)) &<< 16
        return UnpackedBlock(low: unsafeBitCast(a, to: SIMD16<Float>.self), high: unsafeBitCast(b, to: SIMD16<Float>.self), d: 1, m: 0)
    }
    public static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        block.storeBytes(of: HalfPrecision.floatToBF16(x[0]).littleEndian, as: UInt16.self)
    }
    public static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>) {
        x[0] = HalfPrecision.bf16ToFloat(UInt16(littleEndian: block.loadUnaligned(as: UInt16.self)))
    }
}
