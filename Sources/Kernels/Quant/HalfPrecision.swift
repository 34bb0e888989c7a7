/// Scalar conversions between fp32 and the 16-bit float formats.
public enum HalfPrecision {
    @inline(__always) public static func f16ToFloat(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    /// Round to nearest even, as the hardware conversion does.
    @inline(__always) public static func floatToF16(_ x: Float) -> UInt16 { Float16(x).bitPattern }

    @inline(__always) public static func bf16ToFloat(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// Round to nearest even; NaN stays a (quiet) NaN.
    @inline(__always) public static func floatToBF16(_ x: Float) -> UInt16 {
        let u = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: u >> 16) | 0x40 }
        return UInt16(truncatingIfNeeded: (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16)
    }

    /// The value after a round trip through f16.
    @inline(__always) public static func roundToF16(_ x: Float) -> Float { Float(Float16(x)) }
}
