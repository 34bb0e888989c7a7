import Foundation
import GGUF
import Kernels

/// `apus quantize`: reads a GGUF file, converts each tensor to the format its plan gives
/// (through fp32, row by row, on every thread), and writes a GGUF file with all the input's
/// metadata, `general.file_type` and `general.quantization_version` set as llama-quantize sets
/// them. Tensors whose format does not change are copied byte for byte.
public enum ModelQuantizer {
    public struct Summary: Sendable {
        public let tensors: Int
        public let converted: Int
        public let inputBytes: Int
        public let outputBytes: Int
        public let seconds: Double
    }

    public struct QuantizeError: Error, CustomStringConvertible {
        public let description: String
    }

    /// ggml's `GGML_QNT_VERSION`: the block layouts of the legacy formats since May 2023.
    static let quantizationVersion: UInt32 = 2

    /// Quantizes `input` into `output`. `log` receives one line per tensor and warnings.
    public static func quantize(input: String, output: String, mix: QuantizationMix, threads: Int,
                                log: (String) -> Void) throws -> Summary {
        let start = Date()
        guard URL(fileURLWithPath: input).standardizedFileURL != URL(fileURLWithPath: output).standardizedFileURL else {
            throw QuantizeError(description: "the output path is the input file; write to another path")
        }
        let file = try GGUFFile(path: input, residency: .mapped)
        let plan = QuantizationPlan(mix: mix, tensors: file.tensors.map { ($0.name, $0.type, $0.dimensions) }, metadata: file.metadata)

        var metadata = file.metadata
        // Appended in llama-quantize's order (it removes a key before setting it), so the two tools write the same bytes.
        for key in ["general.quantization_version", "general.file_type"] { metadata[key] = nil }
        metadata["general.quantization_version"] = .uint32(quantizationVersion)
        metadata["general.file_type"] = .uint32(mix.fileType)
        for key in ["split.no", "split.count", "split.tensors.count"] { metadata[key] = nil }
        var writer = GGUFWriter(metadata: metadata)
        writer.version = 3

        func isQuantized(_ type: GGMLType) -> Bool { TensorFormat(ggmlType: type.rawValue)?.isQuantized == true }
        let requantized = Set(plan.entries.filter { $0.source != $0.target && isQuantized($0.source) && isQuantized($0.target) }
            .map(\.source.name))
        if !requantized.isEmpty {
            log("warning: requantizing tensors stored as \(requantized.sorted().joined(separator: ", ")): the result is less accurate than quantizing the F32/F16/BF16 original")
        }

        let pool = ThreadPool(threads: max(1, threads))
        var converted = 0
        for (index, entry) in plan.entries.enumerated() {
            let info = file.tensor(named: entry.name)!
            let shape = info.dimensions.map(String.init).joined(separator: ", ")
            let prefix = "[\(String(repeating: " ", count: max(0, 4 - String(index + 1).count)))\(index + 1)/\(file.tensors.count)] \(info.name) [\(shape)] \(info.type.name)"
            if entry.target == entry.source {
                writer.add(.init(name: info.name, type: info.type, dimensions: info.dimensions, data: Array(file.data(of: info))))
                log("\(prefix) kept")
                continue
            }
            let data = try convert(info, data: file.data(of: info), to: entry.target, pool: pool)
            writer.add(.init(name: info.name, type: entry.target, dimensions: info.dimensions, data: data))
            converted += 1
            log("\(prefix) -> \(entry.target.name)\(entry.fallback.map { " (\($0))" } ?? "")  \(megabytes(info.byteCount)) -> \(megabytes(data.count))")
        }
        try writer.write(to: output)
        let outputBytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        return Summary(tensors: file.tensors.count, converted: converted, inputBytes: file.fileSize, outputBytes: outputBytes,
                       seconds: Date().timeIntervalSince(start))
    }

    private static func megabytes(_ bytes: Int) -> String { String(format: "%.2f MiB", Double(bytes) / 1_048_576) }

    /// Each row decoded to fp32 and encoded in `target`, rows shared out among the pool's threads.
    static func convert(_ info: GGUFTensorInfo, data: UnsafeRawBufferPointer, to target: GGMLType, pool: ThreadPool) throws -> [UInt8] {
        guard let source = TensorFormat(ggmlType: info.type.rawValue) else {
            throw QuantizeError(description: "\(info.name): Apus cannot decode tensors of type \(info.type.name)")
        }
        guard let format = TensorFormat(ggmlType: target.rawValue) else {
            throw QuantizeError(description: "\(info.name): Apus cannot encode tensors of type \(target.name)")
        }
        let rowLength = info.rowLength, rows = info.rowCount
        guard source.canStore(rowLength: rowLength), format.canStore(rowLength: rowLength) else {
            throw QuantizeError(description: "\(info.name): a row of \(rowLength) values cannot be stored as \(target.name)")
        }
        let inRow = source.rowBytes(rowLength), outRow = format.rowBytes(rowLength)
        var out = [UInt8](repeating: 0, count: rows * outRow)
        let src = UncheckedBox(data.baseAddress!)
        out.withUnsafeMutableBytes { dst in
            let dst = UncheckedBox(dst.baseAddress!)
            pool.parallelFor(rows, minimumChunk: max(1, 65_536 / rowLength)) { range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: rowLength) { values in
                    for row in range {
                        Quantization.dequantize(src.value + row * inRow, count: rowLength, format: source, into: values.baseAddress!)
                        Quantization.quantize(values.baseAddress!, count: rowLength, format: format, into: dst.value + row * outRow)
                    }
                }
            }
        }
        return out
    }
}
