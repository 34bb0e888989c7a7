/// Conversion between fp32 rows and stored rows in every `TensorFormat`, following the
/// reference rules of ggml's `quantize_row_*_ref` and `dequantize_row_*`. These are plain
/// scalar loops: they write files and serve as the reference the fast kernels are tested
/// against.
public enum Quantization {
    /// Encodes `count` values (a multiple of the format's block size) into `dst`, which
    /// must hold `format.rowBytes(count)` bytes.
    public static func quantize(_ src: UnsafePointer<Float>, count: Int, format: TensorFormat, into dst: UnsafeMutableRawPointer) {
        precondition(format.canStore(rowLength: count), "row length \(count) is not a whole number of \(format) blocks")
        switch format {
        case .f32:
            for i in 0..<count { dst.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        case .f16:
            for i in 0..<count { dst.storeBytes(of: HalfPrecision.floatToF16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .bf16:
            for i in 0..<count { dst.storeBytes(of: HalfPrecision.floatToBF16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        default:
            for b in 0..<(count / 32) {
                encodeBlock(src + 32 * b, format: format, into: dst + b * format.blockBytes)
            }
        }
    }

    /// Decodes `count` values from a stored row.
    public static func dequantize(_ src: UnsafeRawPointer, count: Int, format: TensorFormat, into dst: UnsafeMutablePointer<Float>) {
        switch format {
        case .f32:
            for i in 0..<count { dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .f16:
            for i in 0..<count { dst[i] = HalfPrecision.f16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .bf16:
            for i in 0..<count { dst[i] = HalfPrecision.bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        default:
            for b in 0..<(count / 32) {
                decodeBlock(src + b * format.blockBytes, format: format, into: dst + 32 * b)
            }
        }
    }

    public static func quantize(_ values: [Float], format: TensorFormat) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: format.rowBytes(values.count))
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBytes { quantize(src.baseAddress!, count: values.count, format: format, into: $0.baseAddress!) }
        }
        return out
    }

    public static func dequantize(_ bytes: [UInt8], count: Int, format: TensorFormat) -> [Float] {
        precondition(bytes.count >= format.rowBytes(count))
        var out = [Float](repeating: 0, count: count)
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dequantize(src.baseAddress!, count: count, format: format, into: $0.baseAddress!) }
        }
        return out
    }

    private static func putF16(_ x: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
        p.storeBytes(of: HalfPrecision.floatToF16(x).littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    private static func getF16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        HalfPrecision.f16ToFloat(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    private static func encodeBlock(_ x: UnsafePointer<Float>, format: TensorFormat, into y: UnsafeMutableRawPointer) {
        var amax: Float = 0, signedMax: Float = 0
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for j in 0..<32 {
            let v = x[j]
            if amax < abs(v) { amax = abs(v); signedMax = v }
            lo = min(lo, v)
            hi = max(hi, v)
        }
        switch format {
        case .q4_0, .q5_0:
            let levels: Float = format == .q4_0 ? -8 : -16
            let top: Int32 = format == .q4_0 ? 15 : 31
            let d = signedMax / levels
            let id: Float = d != 0 ? 1 / d : 0
            putF16(d, y, 0)
            var qh: UInt32 = 0
            let qs = format == .q4_0 ? 2 : 6
            for j in 0..<16 {
                let q0 = min(top, Int32(Int8(truncatingIfNeeded: Int32((x[j] * id + (-levels + 0.5)).rounded(.towardZero)))))
                let q1 = min(top, Int32(Int8(truncatingIfNeeded: Int32((x[j + 16] * id + (-levels + 0.5)).rounded(.towardZero)))))
                y.storeBytes(of: UInt8(q0 & 0xF) | UInt8(q1 & 0xF) << 4, toByteOffset: qs + j, as: UInt8.self)
                qh |= UInt32((q0 & 0x10) >> 4) << j | UInt32((q1 & 0x10) >> 4) << (j + 16)
            }
            if format == .q5_0 { y.storeBytes(of: qh.littleEndian, toByteOffset: 2, as: UInt32.self) }
        case .q4_1, .q5_1:
            let steps: Float = format == .q4_1 ? 15 : 31
            let d = (hi - lo) / steps
            let id: Float = d != 0 ? 1 / d : 0
            putF16(d, y, 0)
            putF16(lo, y, 2)
            var qh: UInt32 = 0
            let qs = format == .q4_1 ? 4 : 8
            for j in 0..<16 {
                var q0 = Int32(UInt8(truncatingIfNeeded: Int32(((x[j] - lo) * id + 0.5).rounded(.towardZero))))
                var q1 = Int32(UInt8(truncatingIfNeeded: Int32(((x[j + 16] - lo) * id + 0.5).rounded(.towardZero))))
                if format == .q4_1 { q0 = min(15, q0); q1 = min(15, q1) }
                y.storeBytes(of: UInt8(q0 & 0xF) | UInt8(q1 & 0xF) << 4, toByteOffset: qs + j, as: UInt8.self)
                qh |= UInt32((q0 & 0x10) >> 4) << j | UInt32((q1 & 0x10) >> 4) << (j + 16)
            }
            if format == .q5_1 { y.storeBytes(of: qh.littleEndian, toByteOffset: 4, as: UInt32.self) }
        case .q8_0:
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            putF16(d, y, 0)
            for j in 0..<32 {
                // C's roundf: ties away from zero.
                y.storeBytes(of: Int8((x[j] * id).rounded(.toNearestOrAwayFromZero)), toByteOffset: 2 + j, as: Int8.self)
            }
        case .f32, .f16, .bf16:
            preconditionFailure("plain float formats are not block-encoded")
        }
    }

    private static func decodeBlock(_ y: UnsafeRawPointer, format: TensorFormat, into x: UnsafeMutablePointer<Float>) {
        let d = getF16(y, 0)
        switch format {
        case .q4_0, .q4_1, .q5_0, .q5_1:
            let hasMin = format == .q4_1 || format == .q5_1
            let isFive = format == .q5_0 || format == .q5_1
            let m: Float = hasMin ? getF16(y, 2) : 0
            let qhOffset = hasMin ? 4 : 2
            let qh: UInt32 = isFive ? UInt32(littleEndian: y.loadUnaligned(fromByteOffset: qhOffset, as: UInt32.self)) : 0
            let qs = (hasMin ? 4 : 2) + (isFive ? 4 : 0)
            let offset: Int32 = hasMin ? 0 : (isFive ? 16 : 8)
            for j in 0..<16 {
                let byte = y.load(fromByteOffset: qs + j, as: UInt8.self)
                let q0 = Int32(byte & 0xF) | Int32((qh >> j) & 1) << 4
                let q1 = Int32(byte >> 4) | Int32((qh >> (j + 16)) & 1) << 4
                x[j] = Float(q0 - offset) * d + m
                x[j + 16] = Float(q1 - offset) * d + m
            }
        case .q8_0:
            for j in 0..<32 { x[j] = Float(y.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
        case .f32, .f16, .bf16:
            preconditionFailure("plain float formats are not block-encoded")
        }
    }
}
