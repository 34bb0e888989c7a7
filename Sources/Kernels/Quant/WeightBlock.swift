/// One block of 32 weights unpacked for arithmetic: `value_j = d * q_j + m`, with the
/// integer-valued `q_j` (already offset for the symmetric formats) held as floats in two
/// halves. Plain float formats unpack with `d = 1`, `m = 0` and `q` the values themselves.
public struct UnpackedBlock {
    public var low: SIMD16<Float>
    public var high: SIMD16<Float>
    public var d: Float
    public var m: Float
}

/// A storage layout of 32-weight blocks. Kernels are generic over it, so each format gets
/// its own specialised loop.
public protocol WeightBlockLayout {
    /// Bytes of one block of 32 weights.
    static var bytesPer32: Int { get }
    static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock
}

@inline(__always) func loadF16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    HalfPrecision.f16ToFloat(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}

@inline(__always) func nibbles(_ p: UnsafeRawPointer) -> (SIMD16<Float>, SIMD16<Float>) {
    let v = p.loadUnaligned(as: SIMD16<UInt8>.self)
    return (SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: v & 0x0F)),
            SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: v &>> 4)))
}

/// The fifth bits of a 5-bit block, as 0 or 16 per weight.
@inline(__always) func fifthBits(_ qh: UInt32) -> (SIMD16<Float>, SIMD16<Float>) {
    let shifts = SIMD16<UInt32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    let lo = ((SIMD16<UInt32>(repeating: qh) &>> shifts) & 1) &<< 4
    let hi = ((SIMD16<UInt32>(repeating: qh >> 16) &>> shifts) & 1) &<< 4
    return (SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: lo)), SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: hi)))
}

public enum F32Layout: WeightBlockLayout {
    public static let bytesPer32 = 128
    @inline(__always) public static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock {
        UnpackedBlock(low: p.loadUnaligned(as: SIMD16<Float>.self),
                      high: p.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self), d: 1, m: 0)
    }
}

public enum F16Layout: WeightBlockLayout {
    public static let bytesPer32 = 64
    @inline(__always) public static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock {
        UnpackedBlock(low: SIMD16<Float>(p.loadUnaligned(as: SIMD16<Float16>.self)),
                      high: SIMD16<Float>(p.loadUnaligned(fromByteOffset: 32, as: SIMD16<Float16>.self)), d: 1, m: 0)
    }
}

public enum BF16Layout: WeightBlockLayout {
    public static let bytesPer32 = 64
    @inline(__always) public static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock {
        let a = SIMD16<UInt32>(truncatingIfNeeded: p.loadUnaligned(as: SIMD16<UInt16>.self)) &<< 16
        let b = SIMD16<UInt32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 32, as: SIMD16<UInt16>.self)) &<< 16
        return UnpackedBlock(low: unsafeBitCast(a, to: SIMD16<Float>.self), high: unsafeBitCast(b, to: SIMD16<Float>.self), d: 1, m: 0)
    }
}

/// Q4_0: `d: f16`, 16 bytes of nibbles; weight = d * (q - 8).
public enum Q4_0Layout: WeightBlockLayout {
    public static let bytesPer32 = 18
    @inline(__always) public static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock {
        let (lo, hi) = nibbles(p + 2)
        return UnpackedBlock(low: lo - 8, high: hi - 8, d: loadF16(p, 0), m: 0)
    }
}

/// Q4_1: `d: f16`, `m: f16`, 16 bytes of nibbles; weight = d * q + m.
public enum Q4_1Layout: WeightBlockLayout {
    public static let bytesPer32 = 20
    @inline(__always) public static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock {
        let (lo, hi) = nibbles(p + 4)
        return UnpackedBlock(low: lo, high: hi, d: loadF16(p, 0), m: loadF16(p, 2))
    }
}

/// Q5_0: `d: f16`, `qh: u32`, 16 bytes of nibbles; weight = d * (q - 16).
public enum Q5_0Layout: WeightBlockLayout {
    public static let bytesPer32 = 22
    @inline(__always) public static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock {
        let (lo, hi) = nibbles(p + 6)
        let (bl, bh) = fifthBits(p.loadUnaligned(fromByteOffset: 2, as: UInt32.self).littleEndian)
        return UnpackedBlock(low: lo + bl - 16, high: hi + bh - 16, d: loadF16(p, 0), m: 0)
    }
}

/// Q5_1: `d: f16`, `m: f16`, `qh: u32`, 16 bytes of nibbles; weight = d * q + m.
public enum Q5_1Layout: WeightBlockLayout {
    public static let bytesPer32 = 24
    @inline(__always) public static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock {
        let (lo, hi) = nibbles(p + 8)
        let (bl, bh) = fifthBits(p.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian)
        return UnpackedBlock(low: lo + bl, high: hi + bh, d: loadF16(p, 0), m: loadF16(p, 2))
    }
}

/// Q8_0: `d: f16`, 32 signed bytes; weight = d * q.
public enum Q8_0Layout: WeightBlockLayout {
    public static let bytesPer32 = 34
    @inline(__always) public static func unpack(_ p: UnsafeRawPointer) -> UnpackedBlock {
        let a = p.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
        let b = p.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
        return UnpackedBlock(low: SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: a)),
                             high: SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: b)), d: loadF16(p, 0), m: 0)
    }
}
