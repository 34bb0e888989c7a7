extension Llama.Variant {
    /// Qwen3 (dense): no biases; queries and keys each RMSNormed per head (`attn_q_norm`,
    /// `attn_k_norm`) before NeoX RoPE (llama.cpp's `LLM_ARCH_QWEN3`).
    static let qwen3 = Llama.Variant(name: "qwen3", ropeLayout: .neox, requiresBiases: false, requiresQKNorms: true)
}
