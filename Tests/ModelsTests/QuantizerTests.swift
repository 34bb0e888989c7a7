import Foundation
import GGUF
import Kernels
import Models
import TestSupport
import XCTest

/// `apus quantize`: the per-tensor mix is llama-quantize's, and a quantized synthetic model
/// loads, carries llama.cpp's metadata, and computes close to the F16 model it came from.
final class QuantizerTests: XCTestCase {
    /// The tensors of a Llama-shaped model: `width`-wide projections, a `feedForward`-wide
    /// down projection, norms; an output projection unless the embedding is tied.
    func llamaTensors(layers: Int, width: Int, feedForward: Int, kvWidth: Int, tied: Bool) -> [(name: String, type: GGMLType, dimensions: [Int])] {
        var tensors: [(name: String, type: GGMLType, dimensions: [Int])] = [("token_embd.weight", .f16, [width, 49152]), ("output_norm.weight", .f32, [width])]
        if !tied { tensors.append(("output.weight", .f16, [width, 49152])) }
        for i in 0..<layers {
            let p = "blk.\(i)."
            tensors += [(p + "attn_norm.weight", .f32, [width]), (p + "attn_q.weight", .f16, [width, width]),
                        (p + "attn_k.weight", .f16, [width, kvWidth]), (p + "attn_v.weight", .f16, [width, kvWidth]),
                        (p + "attn_output.weight", .f16, [width, width]), (p + "ffn_norm.weight", .f32, [width]),
                        (p + "ffn_gate.weight", .f16, [width, feedForward]), (p + "ffn_up.weight", .f16, [width, feedForward]),
                        (p + "ffn_down.weight", .f16, [feedForward, width])]
        }
        return tensors
    }

    func plan(_ mix: QuantizationMix, _ tensors: [(name: String, type: GGMLType, dimensions: [Int])], layers: Int) -> [String: GGMLType] {
        let metadata = GGUFMetadata([("general.architecture", .string("llama")), ("llama.block_count", .uint32(UInt32(layers)))])
        return Dictionary(uniqueKeysWithValues: QuantizationPlan(mix: mix, tensors: tensors, metadata: metadata).entries.map { ($0.name, $0.target) })
    }

    /// SmolLM2-135M's shapes (30 layers, width 576, feed-forward 1536, tied embedding) under
    /// Q4_K_M, worked by hand from llama.cpp's rules: more bits for attention V and the down
    /// projection in layers 0-2, 26-29 and every third from 5 (5, 8, ..., 23); a 576-wide row
    /// is no whole number of 256-value blocks, so Q4_K falls back to Q5_0 and Q6_K to Q8_0.
    func testQ4KMMixOnSmolLM2Shapes() {
        let targets = plan(.q4_K_M, llamaTensors(layers: 30, width: 576, feedForward: 1536, kvWidth: 192, tied: true), layers: 30)
        let moreBits: Set<Int> = [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
        XCTAssertEqual(targets["token_embd.weight"], .q8_0)
        XCTAssertEqual(targets["output_norm.weight"], .f32)
        for i in 0..<30 {
            let p = "blk.\(i)."
            XCTAssertEqual(targets[p + "attn_norm.weight"], .f32)
            XCTAssertEqual(targets[p + "attn_v.weight"], moreBits.contains(i) ? .q8_0 : .q5_0, "layer \(i)")
            XCTAssertEqual(targets[p + "ffn_down.weight"], moreBits.contains(i) ? .q6_K : .q4_K, "layer \(i)")
            for name in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] { XCTAssertEqual(targets[p + name + ".weight"], .q5_0, "\(p)\(name)") }
        }
    }

    /// Qwen2.5-Coder-1.5B's widths (1536, every row a whole number of super-blocks), untied,
    /// 28 layers: the output gets Q6_K, the embedding the default; Q5_K_M and Q8_0 likewise.
    func testKQuantMixesWhereEveryWidthFits() {
        let tensors = llamaTensors(layers: 28, width: 1536, feedForward: 8960, kvWidth: 256, tied: false)
        let q4 = plan(.q4_K_M, tensors, layers: 28)
        XCTAssertEqual(q4["output.weight"], .q6_K)
        XCTAssertEqual(q4["token_embd.weight"], .q4_K)
        // 28 layers: more bits for 0-2, 24-27 and 5, 8, ..., 23.
        for i in [0, 2, 5, 23, 24, 27] { XCTAssertEqual(q4["blk.\(i).attn_v.weight"], .q6_K, "layer \(i)"); XCTAssertEqual(q4["blk.\(i).ffn_down.weight"], .q6_K) }
        for i in [3, 4, 6, 22] { XCTAssertEqual(q4["blk.\(i).attn_v.weight"], .q4_K, "layer \(i)"); XCTAssertEqual(q4["blk.\(i).ffn_down.weight"], .q4_K) }
        XCTAssertEqual(q4["blk.3.ffn_up.weight"], .q4_K)
        let q5 = plan(.q5_K_M, tensors, layers: 28)
        XCTAssertEqual(q5["blk.0.attn_v.weight"], .q6_K)
        XCTAssertEqual(q5["blk.3.attn_v.weight"], .q5_K)
        XCTAssertEqual(q5["blk.3.ffn_gate.weight"], .q5_K)
        XCTAssertEqual(q5["output.weight"], .q6_K)
        let q8 = plan(.q8_0, tensors, layers: 28)
        XCTAssertTrue(q8.allSatisfy { $0.key.hasSuffix("norm.weight") ? $0.value == .f32 : $0.value == .q8_0 })
        XCTAssertEqual(plan(.q4_0, tensors, layers: 28)["output.weight"], .q6_K)
        // F16 has no mix: every matrix, the embedding and output included.
        let f16 = plan(.f16, tensors, layers: 28)
        XCTAssertTrue(f16.allSatisfy { $0.key.hasSuffix("norm.weight") ? $0.value == .f32 : $0.value == .f16 })
    }

    func logits(_ file: GGUFFile, _ tokens: [Int]) throws -> [Float] {
        let model = try ModelRegistry.load(file, options: ModelOptions(threads: 2, precision: .int8))
        let cache = model.makePagedCache(blockSize: 4, blockCount: 64)
        var batch = ForwardBatch()
        batch.append(tokens[...], firstPosition: 0, blockTable: (0..<Int32((tokens.count + 3) / 4)).map { $0 }, logitsOfLast: tokens.count)
        return try model.forward(batch, cache: cache)
    }

    func quantized(_ source: GGUFFile, bytes: [UInt8], mix: QuantizationMix) throws -> GGUFFile {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("apus-quantize-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let input = folder.appendingPathComponent("in.gguf").path, output = folder.appendingPathComponent("out.gguf").path
        try Data(bytes).write(to: URL(fileURLWithPath: input))
        var lines: [String] = []
        let summary = try ModelQuantizer.quantize(input: input, output: output, mix: mix, threads: 2) { lines.append($0) }
        XCTAssertEqual(summary.tensors, source.tensors.count)
        XCTAssertEqual(lines.count, source.tensors.count, "one line per tensor, no warning for an F16 source")
        XCTAssertFalse(FileManager.default.fileExists(atPath: output + ".partial"))
        return try GGUFFile(bytes: Array(try Data(contentsOf: URL(fileURLWithPath: output))))
    }

    /// Every value of `tensor` decoded to fp32.
    func values(_ file: GGUFFile, _ tensor: GGUFTensorInfo) -> [Float] {
        let format = TensorFormat(ggmlType: tensor.type.rawValue)!
        return Quantization.dequantize(Array(file.data(of: tensor)), count: tensor.elementCount, format: format)
    }

    /// An F16 synthetic Llama (width 64, feed-forward 256) quantized to Q8_0 and Q4_K_M: the
    /// metadata is the input's plus `general.file_type` and `general.quantization_version`,
    /// each tensor has the plan's type, each matrix decodes to the original within its format's
    /// rounding (uniform weights: RMS error about half a step, a step being 1/127 of the group's
    /// largest magnitude for Q8_0, 1/31 for Q6_K, 1/16 for Q5_0 and 1/15 of the group's range
    /// for Q4_K), and the logits move less for Q8_0 than for Q4_K_M.
    func testQuantizedSyntheticModelComputesCloseToTheOriginal() throws {
        let bytes = SyntheticModel.bytes("llama", matrices: .f16)
        let source = try GGUFFile(bytes: bytes)
        let tokens = (0..<12).map { 3 + ($0 * 37) % 256 }
        let reference = try logits(source, tokens)
        let bound: [GGMLType: Float] = [.q8_0: 0.0045, .q6_K: 0.016, .q5_0: 0.036, .q4_K: 0.065]
        var logitError: [QuantizationMix: Float] = [:]
        for mix in [QuantizationMix.q8_0, .q4_K_M] {
            let file = try quantized(source, bytes: bytes, mix: mix)
            XCTAssertEqual(try file.metadata.int("general.file_type"), Int(mix.fileType))
            XCTAssertEqual(try file.metadata.int("general.quantization_version"), 2)
            for key in source.metadata.keys { XCTAssertNotNil(file.metadata[key], "\(mix): \(key) kept") }
            // llama-quantize's order: tensors outside the layers, then layer by layer, by name within each.
            let names = source.tensors.map(\.name)
            let expectedOrder = names.filter { !$0.hasPrefix("blk.") }.sorted()
                + (0..<3).flatMap { layer in names.filter { $0.hasPrefix("blk.\(layer).") }.sorted() }
            XCTAssertEqual(file.tensors.map(\.name), expectedOrder)
            for t in file.tensors where t.dimensions.count == 1 { XCTAssertEqual(t.type, source.tensor(named: t.name)!.type, "\(t.name) kept") }
            if mix == .q8_0 {
                XCTAssertTrue(file.tensors.filter { $0.dimensions.count == 2 }.allSatisfy { $0.type == .q8_0 })
            } else {
                // 64-wide rows fall back to Q5_0 (Q6_K's to Q8_0); the 256-wide down projections stay K-quants.
                XCTAssertEqual(file.tensor(named: "token_embd.weight")?.type, .q8_0)
                XCTAssertEqual(file.tensor(named: "blk.0.attn_q.weight")?.type, .q5_0)
                // Three layers: only the last is in "the last eighth" and gets more bits.
                XCTAssertEqual(file.tensor(named: "blk.0.attn_v.weight")?.type, .q5_0)
                XCTAssertEqual(file.tensor(named: "blk.2.attn_v.weight")?.type, .q8_0)
                XCTAssertEqual(file.tensor(named: "blk.0.ffn_down.weight")?.type, .q4_K)
                XCTAssertEqual(file.tensor(named: "blk.2.ffn_down.weight")?.type, .q6_K)
            }
            for t in file.tensors where t.dimensions.count == 2 {
                let original = values(source, source.tensor(named: t.name)!), decoded = values(file, t)
                // The Q8_0 embedding of the synthetic source is copied, not re-encoded.
                if source.tensor(named: t.name)!.type == t.type {
                    XCTAssertEqual(decoded, original, "\(mix): \(t.name) copied")
                    continue
                }
                let error = zip(decoded, original).map { ($0 - $1) * ($0 - $1) }.reduce(0, +)
                let signal = original.map { $0 * $0 }.reduce(0, +)
                XCTAssertLessThan((error / signal).squareRoot(), bound[t.type]!, "\(mix): \(t.name) as \(t.type.name)")
            }
            let got = try logits(file, tokens)
            logitError[mix] = zip(got, reference).map { abs($0 - $1) }.max()!
        }
        XCTAssertLessThan(logitError[.q8_0]!, logitError[.q4_K_M]! / 2, "Q8_0 moves the logits less than Q4_K_M: \(logitError)")
    }

    func testRequantizingWarnsAndTheOutputPathMustDiffer() throws {
        let bytes = SyntheticModel.bytes("llama")
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("apus-quantize-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let input = folder.appendingPathComponent("in.gguf").path
        try Data(bytes).write(to: URL(fileURLWithPath: input))
        var lines: [String] = []
        _ = try ModelQuantizer.quantize(input: input, output: input + ".q8.gguf", mix: .q8_0, threads: 1) { lines.append($0) }
        XCTAssertTrue(lines[0].hasPrefix("warning: requantizing tensors stored as Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q6_K"), lines[0])
        XCTAssertThrowsError(try ModelQuantizer.quantize(input: input, output: input, mix: .q8_0, threads: 1) { _ in }) {
            XCTAssertEqual("\($0)", "the output path is the input file; write to another path")
        }
    }
}
