/// 32 weights unpacked for arithmetic: `value_j = d * q_j + m`, with the integer-valued
/// `q_j` (already offset for the symmetric formats) held as floats in two halves. Plain
/// float formats unpack with `d = 1`, `m = 0` and `q` the values themselves.
public struct UnpackedBlock {
    public var low: SIMD16<Float>
    public var high: SIMD16<Float>
    public var d: Float
    public var m: Float
}

/// How one weight format's blocks are stored. The Swift kernels are generic over it, so
/// each format gets its own specialised loop; the scalar conversions (file writing, the
/// reference the fast kernels are tested against) go through it too.
public protocol WeightBlockLayout {
    /// Values per stored block (1 for plain float formats, else 32 or 256).
    static var blockValues: Int { get }
    /// Bytes per stored block.
    static var blockBytes: Int { get }
    /// Values `32·group ..< 32·group + 32` of a row, unpacked (`row` holds whole blocks).
    static func unpack(_ row: UnsafeRawPointer, group: Int) -> UnpackedBlock
    /// Encodes `blockValues` floats into one block.
    static func quantize(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer)
    /// Decodes one block into `blockValues` floats (ggml's `dequantize_row_*` arithmetic).
    static func dequantize(_ block: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>)

    /// `count` values (whole blocks) block by block; requirements so that a call through the
    /// format's layout runs a loop specialised for it.
    static func quantizeRow(_ x: UnsafePointer<Float>, count: Int, into row: UnsafeMutableRawPointer)
    static func dequantizeRow(_ row: UnsafeRawPointer, count: Int, into x: UnsafeMutablePointer<Float>)
    /// The portable matrix kernels for this layout (`MatMul.swift`).
    static func multiplyRows(_ w: WeightMatrix, _ act: PreparedActivations, _ y: UnsafeMutablePointer<Float>, _ pool: ThreadPool, _ accumulate: Bool)
}

extension WeightBlockLayout {
    public static func quantizeRow(_ x: UnsafePointer<Float>, count: Int, into row: UnsafeMutableRawPointer) {
        for b in 0..<(count / blockValues) { quantize(x + b * blockValues, into: row + b * blockBytes) }
    }
    public static func dequantizeRow(_ row: UnsafeRawPointer, count: Int, into x: UnsafeMutablePointer<Float>) {
        for b in 0..<(count / blockValues) { dequantize(row + b * blockBytes, into: x + b * blockValues) }
    }
}

/// A 256-value super-block format (the K-quants), multiplied in integers against Q8_K
/// activations as llama.cpp does: per super-block, `Σ_g scale_g · Σ q·a` and
/// `Σ_g min_g · Σ a` in exact integers, then `d · d_a` and `dmin · d_a` times those.
public protocol SuperBlockLayout: WeightBlockLayout {
    /// The block's integers: `q` (256 values, offset applied), and per 16 values the scale
    /// and the minimum (0 for formats without one); returns `d` and `dmin` as floats.
    static func integers(_ block: UnsafeRawPointer, q: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Int32>,
                         mins: UnsafeMutablePointer<Int32>) -> (d: Float, dmin: Float)
}

@inline(__always) func loadF16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    HalfPrecision.f16ToFloat(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

@inline(__always) func storeF16(_ x: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
    p.storeBytes(of: HalfPrecision.floatToF16(x).littleEndian, toByteOffset: offset, as: UInt16.self)
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

/// ggml's `nearest_int`: round half to even (exact for |x| < 2^22).
@inline(__always) func nearestInt(_ x: Float) -> Int32 { Int32(x.rounded(.toNearestOrEven)) }
