import Foundation
import GGUF
import Kernels

/// Tiny GGUF models of each architecture with random weights (mlx-swift-lm tests its
/// architectures the same way), so architecture and scheduler tests need no download.
/// The vocabulary is SentencePiece's bytes: `<unk>`, `<s>`, `</s>`, then `<0x00>`…`<0xFF>`.
public enum SyntheticModel {
    public struct Shape: Sendable {
        public var layers = 3
        public var width = 64
        public var heads = 4
        public var kvHeads = 2
        /// Per head; when it differs from width / heads the file says so (`key_length`).
        public var headDim = 16
        public var feedForward = 256
        public var context = 512
        /// Added to the last channel of every KV head's key bias (`qwen2`): a channel far
        /// above the rest, in the slowest-turning RoPE pair, as Qwen2.5's key biases make.
        public var keyBiasOutlier: Float = 0
        public init() {}
    }

    public static let vocabularySize = 259

    /// A model of `architecture` (`llama`, `qwen2`, `qwen3` or `gemma3`): the formats mix
    /// 32-value and K-quant blocks (the feed-forward's down projection is 256 wide), and
    /// Gemma 3's layers alternate local (a sliding `window`) and global. With `matrices`, every
    /// matrix is stored in that one format instead (an F16 file to quantize, say).
    public static func file(_ architecture: String, shape: Shape = Shape(), window: Int = 8, seed: UInt64 = 1, matrices: GGMLType? = nil) throws -> GGUFFile {
        try GGUFFile(bytes: bytes(architecture, shape: shape, window: window, seed: seed, matrices: matrices))
    }

    public static func bytes(_ architecture: String, shape s: Shape = Shape(), window: Int = 8, seed start: UInt64 = 1, matrices: GGMLType? = nil) -> [UInt8] {
        var seed = start
        func random(_ count: Int, scale: Float) -> [Float] {
            (0..<count).map { _ in
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return (Float(seed >> 40) / Float(1 << 24) * 2 - 1) * scale
            }
        }
        var writer = GGUFWriter()
        let a = architecture
        func int(_ key: String, _ v: Int) { writer.metadata["\(a).\(key)"] = .uint32(UInt32(v)) }
        writer.metadata["general.architecture"] = .string(a)
        writer.metadata["general.name"] = .string("synthetic \(a)")
        int("block_count", s.layers)
        int("embedding_length", s.width)
        int("feed_forward_length", s.feedForward)
        int("attention.head_count", s.heads)
        int("attention.head_count_kv", s.kvHeads)
        int("context_length", s.context)
        if s.headDim * s.heads != s.width {
            int("attention.key_length", s.headDim)
            int("attention.value_length", s.headDim)
        }
        writer.metadata["\(a).rope.freq_base"] = .float32(a == "gemma3" ? 1_000_000 : 10000)
        writer.metadata["\(a).attention.layer_norm_rms_epsilon"] = .float32(1e-6)
        if a == "gemma3" {
            int("attention.sliding_window", window)
            int("attention.sliding_window_pattern", 2)
        }
        let tokens = ["<unk>", "<s>", "</s>"] + (0..<256).map { String(format: "<0x%02X>", $0) }
        writer.metadata["tokenizer.ggml.model"] = .string("llama")
        writer.metadata["tokenizer.ggml.tokens"] = .array(.string, tokens.map { .string($0) })
        writer.metadata["tokenizer.ggml.scores"] = .array(.float32, tokens.map { _ in .float32(0) })
        writer.metadata["tokenizer.ggml.token_type"] = .array(.int32, tokens.indices.map { .int32($0 == 0 ? 2 : $0 < 3 ? 3 : 6) })
        writer.metadata["tokenizer.ggml.unknown_token_id"] = .uint32(0)
        writer.metadata["tokenizer.ggml.bos_token_id"] = .uint32(1)
        writer.metadata["tokenizer.ggml.eos_token_id"] = .uint32(2)
        writer.metadata["tokenizer.ggml.add_bos_token"] = .bool(true)

        func tensor(_ name: String, _ stored: GGMLType, rows: Int, cols: Int, scale: Float, offset: Float = 0, every: Int = 0, plus: Float = 0) {
            let type = rows > 1 ? matrices ?? stored : stored
            var values = random(rows * cols, scale: scale).map { $0 + offset }
            if every > 0 { for i in stride(from: every - 1, to: values.count, by: every) { values[i] += plus } }
            let format = TensorFormat(ggmlType: type.rawValue)!
            writer.add(.init(name: name, type: type, dimensions: rows == 1 ? [cols] : [cols, rows],
                             data: Quantization.quantize(values, format: format)))
        }
        let q = s.heads * s.headDim, kv = s.kvHeads * s.headDim
        tensor("token_embd.weight", .q8_0, rows: vocabularySize, cols: s.width, scale: 1)
        tensor("output_norm.weight", .f32, rows: 1, cols: s.width, scale: 0.2, offset: 1)
        for i in 0..<s.layers {
            let p = "blk.\(i)."
            tensor(p + "attn_norm.weight", .f32, rows: 1, cols: s.width, scale: 0.2, offset: 1)
            tensor(p + "attn_q.weight", .q5_0, rows: q, cols: s.width, scale: 0.3)
            tensor(p + "attn_k.weight", .q4_0, rows: kv, cols: s.width, scale: 0.3)
            tensor(p + "attn_v.weight", .q8_0, rows: kv, cols: s.width, scale: 0.3)
            tensor(p + "attn_output.weight", .q4_1, rows: s.width, cols: q, scale: 0.2)
            if a == "qwen2" {
                tensor(p + "attn_q.bias", .f32, rows: 1, cols: q, scale: 0.5)
                tensor(p + "attn_k.bias", .f32, rows: 1, cols: kv, scale: 0.5, every: s.headDim, plus: s.keyBiasOutlier)
                tensor(p + "attn_v.bias", .f32, rows: 1, cols: kv, scale: 0.5)
            }
            if a == "qwen3" || a == "gemma3" {
                tensor(p + "attn_q_norm.weight", .f32, rows: 1, cols: s.headDim, scale: 0.2, offset: 1)
                tensor(p + "attn_k_norm.weight", .f32, rows: 1, cols: s.headDim, scale: 0.2, offset: 1)
            }
            if a == "gemma3" {
                tensor(p + "post_attention_norm.weight", .f32, rows: 1, cols: s.width, scale: 0.2, offset: 1)
                tensor(p + "post_ffw_norm.weight", .f32, rows: 1, cols: s.width, scale: 0.2, offset: 1)
            }
            tensor(p + "ffn_norm.weight", .f32, rows: 1, cols: s.width, scale: 0.2, offset: 1)
            tensor(p + "ffn_gate.weight", .q5_1, rows: s.feedForward, cols: s.width, scale: 0.3)
            tensor(p + "ffn_up.weight", .q8_0, rows: s.feedForward, cols: s.width, scale: 0.3)
            tensor(p + "ffn_down.weight", i % 2 == 0 ? .q4_K : .q6_K, rows: s.width, cols: s.feedForward, scale: 0.2)
        }
        if a == "llama" {
            // Llama 3's per-pair RoPE frequency divisors.
            writer.add(.init(name: "rope_freqs.weight", type: .f32, dimensions: [s.headDim / 2],
                             data: (0..<(s.headDim / 2)).flatMap { i in withUnsafeBytes(of: Float(1 + i % 3).bitPattern.littleEndian, Array.init) }))
        }
        return writer.encode()
    }
}
