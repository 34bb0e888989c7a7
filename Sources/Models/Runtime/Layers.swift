import GGUF
import Kernels

/// Self-attention's weights: projections, the biases Qwen2 adds to them, and the per-head
/// RMSNorm of queries and keys that Qwen3 and Gemma 3 apply before RoPE.
struct AttentionWeights {
    let query, key, value, output: WeightMatrix
    let queryBias, keyBias, valueBias: [Float]?
    let queryNorm, keyNorm: [Float]?
}

/// A gated feed-forward network: `down(act(gate · x) ⊙ (up · x))`.
struct FeedForwardWeights {
    let gate, up, down: WeightMatrix
}

extension TensorBinder {
    /// Every `blk.N` tensor must be within `block_count`, and every block must be present.
    func checkBlocks(_ shape: TransformerShape, prefix: String) throws {
        for tensor in file.tensors where tensor.name.hasPrefix("blk.") {
            let index = tensor.name.dropFirst(4).prefix { $0.isNumber }
            guard let i = Int(index), i < shape.layers else {
                throw GGUFError(field: "\(prefix).block_count", "\(shape.layers) blocks, but the file has tensor \(tensor.name)")
            }
        }
        for i in 0..<shape.layers where !has("blk.\(i).attn_norm.weight") {
            throw GGUFError(field: "\(prefix).block_count", "\(shape.layers) blocks, but the file has no blk.\(i)")
        }
    }

    /// Block `i`'s attention; biases and Q/K norms are bound where the file has them, and
    /// required where `requireBiases` / `requireNorms` say the architecture has them.
    func attention(block i: Int, shape: TransformerShape, prefix: String, requireBiases: Bool = false, requireNorms: Bool = false) throws -> AttentionWeights {
        let p = "blk.\(i)."
        let width = "\(prefix).embedding_length", heads = "\(prefix).attention.head_count", kvHeads = "\(prefix).attention.head_count_kv"
        func bias(_ name: String, count: Int, key: String) throws -> [Float]? {
            requireBiases || has(p + name) ? try vector(p + name, count: count, key: key) : nil
        }
        func norm(_ name: String) throws -> [Float]? {
            requireNorms || has(p + name) ? try vector(p + name, count: shape.headDim, key: "\(prefix).attention.key_length") : nil
        }
        return AttentionWeights(
            query: try matrix(p + "attn_q.weight", rows: shape.queryWidth, cols: shape.width, keys: (heads, width)),
            key: try matrix(p + "attn_k.weight", rows: shape.kvWidth, cols: shape.width, keys: (kvHeads, width)),
            value: try matrix(p + "attn_v.weight", rows: shape.kvWidth, cols: shape.width, keys: (kvHeads, width)),
            output: try matrix(p + "attn_output.weight", rows: shape.width, cols: shape.queryWidth, keys: (width, heads)),
            queryBias: try bias("attn_q.bias", count: shape.queryWidth, key: heads),
            keyBias: try bias("attn_k.bias", count: shape.kvWidth, key: kvHeads),
            valueBias: try bias("attn_v.bias", count: shape.kvWidth, key: kvHeads),
            queryNorm: try norm("attn_q_norm.weight"),
            keyNorm: try norm("attn_k_norm.weight"))
    }

    func feedForward(block i: Int, shape: TransformerShape, prefix: String) throws -> FeedForwardWeights {
        let p = "blk.\(i).", width = "\(prefix).embedding_length", ffn = "\(prefix).feed_forward_length"
        return FeedForwardWeights(
            gate: try matrix(p + "ffn_gate.weight", rows: shape.feedForwardWidth, cols: shape.width, keys: (ffn, width)),
            up: try matrix(p + "ffn_up.weight", rows: shape.feedForwardWidth, cols: shape.width, keys: (ffn, width)),
            down: try matrix(p + "ffn_down.weight", rows: shape.width, cols: shape.feedForwardWidth, keys: (width, ffn)))
    }

    /// A norm vector of the model width.
    func norm(_ name: String, shape: TransformerShape, prefix: String) throws -> [Float] {
        try vector(name, count: shape.width, key: "\(prefix).embedding_length")
    }

    /// The token embedding and the output head (tied to the embedding without `output.weight`).
    func embeddingAndHead(shape: TransformerShape, prefix: String) throws -> (WeightMatrix, WeightMatrix) {
        let width = "\(prefix).embedding_length", vocab = "tokenizer.ggml.tokens"
        let embedding = try matrix("token_embd.weight", rows: shape.vocabularySize, cols: shape.width, keys: (vocab, width))
        let head = has("output.weight") ? try matrix("output.weight", rows: shape.vocabularySize, cols: shape.width, keys: (vocab, width)) : embedding
        return (embedding, head)
    }
}
