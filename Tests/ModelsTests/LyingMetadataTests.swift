import Foundation
import GGUF
import Models
import TestSupport
import Tokenizer
import XCTest

/// Copies of the real model whose metadata lies are rejected with an error naming the key.
final class LyingMetadataTests: XCTestCase {
    func loadEverything(_ file: GGUFFile) throws {
        _ = try Tokenizer(file: file)
        _ = try ModelRegistry.load(file, options: ModelOptions(threads: 1))
        _ = try ChatTemplate(metadata: file.metadata)
    }

    func testEachLieIsRejectedNamingTheKey() throws {
        let original = GGUFWriter(copying: try TestSupport.model())
        let vocabulary = try original.metadata.stringArray("tokenizer.ggml.tokens")
        let lies: [(key: String, value: GGUFValue?)] = [
            ("llama.block_count", .uint32(31)),
            ("llama.block_count", .uint32(29)),
            ("llama.block_count", .uint32(0)),
            ("llama.embedding_length", .uint32(512)),
            ("llama.feed_forward_length", .uint32(1000)),
            ("llama.attention.head_count", .uint32(7)),
            ("llama.attention.head_count_kv", .uint32(2)),
            ("llama.attention.head_count_kv", .uint32(9)),
            ("llama.context_length", .uint32(0)),
            ("llama.context_length", .uint64(1 << 40)),
            ("llama.vocab_size", .uint32(50000)),
            ("llama.rope.freq_base", .float32(-1)),
            ("llama.attention.layer_norm_rms_epsilon", .float32(.nan)),
            ("llama.rope.dimension_count", .uint32(32)),
            ("tokenizer.ggml.eos_token_id", .uint32(49152)),
            ("tokenizer.ggml.bos_token_id", .int32(-1)),
            ("tokenizer.ggml.bos_token_id", .string("1")),
            ("tokenizer.ggml.token_type", .array(.int32, Array(repeating: .int32(1), count: 100))),
            ("tokenizer.ggml.token_type", .array(.int32, Array(repeating: .int32(42), count: vocabulary.count))),
            ("tokenizer.ggml.tokens", .array(.int32, Array(repeating: .int32(1), count: vocabulary.count))),
            ("tokenizer.ggml.tokens", .array(.string, Array(vocabulary.prefix(1000)).map { .string($0) })),
            ("tokenizer.ggml.merges", .array(.string, [.string("nospace")])),
            ("tokenizer.ggml.pre", .string("unheard-of")),
            ("tokenizer.ggml.add_bos_token", .uint8(1)),
            ("llama.attention.head_count", nil),
        ]
        for lie in lies {
            var writer = original
            writer.metadata[lie.key] = lie.value
            let file = try GGUFFile(bytes: writer.encode())
            XCTAssertThrowsError(try loadEverything(file), "\(lie.key) = \(String(describing: lie.value).prefix(80))") { error in
                guard let e = error as? GGUFError else { return XCTFail("\(lie.key): \(error) is not a GGUFError") }
                XCTAssertTrue(e.description.contains(lie.key), "\(lie.key) = \(String(describing: lie.value).prefix(80)): \(e)")
            }
        }
    }

    func testUnsupportedTokenizerIsNamed() throws {
        var writer = GGUFWriter(copying: try TestSupport.model())
        writer.metadata["tokenizer.ggml.model"] = .string("wordpiece")
        XCTAssertThrowsError(try Tokenizer(file: try GGUFFile(bytes: writer.encode()))) {
            XCTAssertEqual("\($0)", "tokenizer model 'wordpiece' is not supported (supported: gpt2, llama)")
        }
    }

    func testUnsupportedArchitectureIsNamed() throws {
        var writer = GGUFWriter(copying: try TestSupport.model())
        writer.metadata["general.architecture"] = .string("gpt5")
        XCTAssertThrowsError(try ModelRegistry.load(try GGUFFile(bytes: writer.encode()))) {
            XCTAssertEqual($0 as? ModelError, .unsupportedArchitecture("gpt5"))
        }
    }

    func testTensorOfAnUnsupportedTypeIsNamed() throws {
        var writer = GGUFWriter(copying: try TestSupport.model())
        let i = writer.tensors.firstIndex { $0.name == "blk.3.ffn_down.weight" }!
        // Q8_K: a valid GGUF type (llama.cpp's activation format) that no weight is stored in.
        writer.tensors[i].type = .q8_K
        writer.tensors[i].data = [UInt8](repeating: 0, count: 576 * 1536 / 256 * 292)
        XCTAssertThrowsError(try ModelRegistry.load(try GGUFFile(bytes: writer.encode()))) {
            XCTAssertEqual("\($0)", "blk.3.ffn_down.weight: tensor type Q8_K is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS)")
            XCTAssertFalse("\($0)".contains("invalid"), "a valid file Apus cannot run is not called invalid")
        }
    }
}
