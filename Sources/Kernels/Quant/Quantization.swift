/// Conversion between fp32 rows and stored rows in every `TensorFormat`, through each
/// format's layout: ggml's `dequantize_row_*` arithmetic, and its `quantize_row_*_ref`
/// rules byte for byte for the formats `apus quantize` writes (the 32-value ones, Q4_K,
/// Q5_K, Q6_K; `Formats/SuperBlocks.swift` has the K-quant searches). Plain scalar loops: they write files and serve as the reference the
/// fast kernels are tested against.
public enum Quantization {
    /// Encodes `count` values (a multiple of the format's block size) into `dst`, which
    /// must hold `format.rowBytes(count)` bytes.
    public static func quantize(_ src: UnsafePointer<Float>, count: Int, format: TensorFormat, into dst: UnsafeMutableRawPointer) {
        precondition(format.canStore(rowLength: count), "row length \(count) is not a whole number of \(format) blocks")
        format.layout.quantizeRow(src, count: count, into: dst)
    }

    /// Decodes `count` values (a multiple of the format's block size) from a stored row.
    public static func dequantize(_ src: UnsafeRawPointer, count: Int, format: TensorFormat, into dst: UnsafeMutablePointer<Float>) {
        precondition(format.canStore(rowLength: count), "row length \(count) is not a whole number of \(format) blocks")
        format.layout.dequantizeRow(src, count: count, into: dst)
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
}
