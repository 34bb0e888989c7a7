import GGUF

/// The sizes every decoder-only transformer declares, read from `<architecture>.*`
/// metadata and checked for consistency before any tensor is bound.
public struct TransformerShape: Sendable, Equatable {
    public var layers: Int
    public var width: Int
    public var feedForwardWidth: Int
    public var heads: Int
    public var kvHeads: Int
    /// Per head; `attention.key_length` where the file says (Gemma 3: 256 while width /
    /// heads is 160), else width / heads.
    public var headDim: Int
    public var contextLength: Int
    public var vocabularySize: Int
    public var ropeBase: Float
    public var normEpsilon: Float

    /// Query width (heads × head size), which need not be the model width.
    public var queryWidth: Int { heads * headDim }
    public var kvWidth: Int { kvHeads * headDim }

    public init(metadata m: GGUFMetadata, prefix: String) throws {
        func positive(_ key: String, max limit: Int) throws -> Int {
            let v = try m.int("\(prefix).\(key)")
            guard v > 0, v <= limit else { throw GGUFError(field: "\(prefix).\(key)", "\(v) is outside 1...\(limit)") }
            return v
        }
        layers = try positive("block_count", max: 1024)
        width = try positive("embedding_length", max: 1 << 16)
        feedForwardWidth = try positive("feed_forward_length", max: 1 << 18)
        heads = try positive("attention.head_count", max: 1024)
        kvHeads = try m.optionalInt("\(prefix).attention.head_count_kv") == nil ? heads : try positive("attention.head_count_kv", max: 1024)
        contextLength = try positive("context_length", max: 1 << 20)
        guard heads % kvHeads == 0 else {
            throw GGUFError(field: "\(prefix).attention.head_count_kv", "\(kvHeads) KV heads do not divide \(prefix).attention.head_count = \(heads)")
        }
        if m["\(prefix).attention.key_length"] != nil {
            headDim = try positive("attention.key_length", max: 1024)
            let valueLength = try m.optionalInt("\(prefix).attention.value_length") ?? headDim
            guard valueLength == headDim else {
                throw GGUFError(field: "\(prefix).attention.value_length", "\(valueLength) differs from \(prefix).attention.key_length = \(headDim); separate key and value sizes are not supported")
            }
        } else {
            guard width % heads == 0 else {
                throw GGUFError(field: "\(prefix).attention.head_count", "\(heads) heads do not divide \(prefix).embedding_length = \(width)")
            }
            headDim = width / heads
        }
        guard headDim % 2 == 0 else {
            throw GGUFError(field: "\(prefix).attention.head_count", "the head size \(headDim) is odd; RoPE needs pairs")
        }
        if let ropeDims = try m.optionalInt("\(prefix).rope.dimension_count"), ropeDims != headDim {
            throw GGUFError(field: "\(prefix).rope.dimension_count", "\(ropeDims) differs from the head size \(headDim); partial rotary embeddings are not supported")
        }
        let base = try m.optionalDouble("\(prefix).rope.freq_base") ?? 10000
        guard base.isFinite, base > 1 else { throw GGUFError(field: "\(prefix).rope.freq_base", "\(base) is not a usable RoPE base") }
        ropeBase = Float(base)
        let eps = try m.optionalDouble("\(prefix).attention.layer_norm_rms_epsilon") ?? 1e-5
        guard eps.isFinite, eps > 0, eps < 1 else {
            throw GGUFError(field: "\(prefix).attention.layer_norm_rms_epsilon", "\(eps) is not a small positive number")
        }
        normEpsilon = Float(eps)
        let tokens = try m.stringArray("tokenizer.ggml.tokens")
        vocabularySize = tokens.count
        guard vocabularySize > 0, vocabularySize <= 1 << 21 else {
            throw GGUFError(field: "tokenizer.ggml.tokens", "vocabulary of \(vocabularySize) tokens is outside 1...\(1 << 21)")
        }
        if let declared = try m.optionalInt("\(prefix).vocab_size"), declared != vocabularySize {
            throw GGUFError(field: "\(prefix).vocab_size", "\(declared) differs from the \(vocabularySize) tokens of tokenizer.ggml.tokens")
        }
    }
}
