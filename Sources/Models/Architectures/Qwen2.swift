extension Llama.Variant {
    /// Qwen2 and Qwen2.5: Llama's blocks with biases on the Q/K/V projections and NeoX RoPE
    /// (llama.cpp's `LLM_ARCH_QWEN2`).
    static let qwen2 = Llama.Variant(name: "qwen2", ropeLayout: .neox, requiresBiases: true, requiresQKNorms: false)
}
