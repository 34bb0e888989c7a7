import GGUF

/// The token table of a model, read from `tokenizer.ggml.*` metadata and validated: array
/// types and lengths, and every special id inside the vocabulary.
public struct Vocabulary: Sendable {
    /// How a token is treated (`tokenizer.ggml.token_type`, numbered as in llama.cpp).
    public enum TokenType: Int, Sendable {
        case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public let tokens: [String]
    public let types: [TokenType]
    public let scores: [Float]
    public let ids: [String: Int]
    public let bos: Int?
    public let eos: Int?
    public let eot: Int?
    public let unknown: Int?
    public let padding: Int?
    public let addBOS: Bool
    public let addEOS: Bool
    /// Tokens that end generation: EOS, EOT, EOM and the control tokens whose text
    /// conventionally ends a turn (as llama.cpp collects them).
    public let endOfGeneration: Set<Int>

    static let endOfTurnTexts: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>",
        "<|end▁of▁sentence|>", "<|return|>", "<|call|>",
    ]

    public var count: Int { tokens.count }

    public init(metadata m: GGUFMetadata) throws {
        let tokens = try m.stringArray("tokenizer.ggml.tokens")
        guard !tokens.isEmpty, tokens.count <= 1 << 21 else {
            throw GGUFError(field: "tokenizer.ggml.tokens", "vocabulary of \(tokens.count) tokens is outside 1...\(1 << 21)")
        }
        if m["tokenizer.ggml.token_type"] != nil {
            let raw = try m.intArray("tokenizer.ggml.token_type")
            guard raw.count == tokens.count else {
                throw GGUFError(field: "tokenizer.ggml.token_type", "has \(raw.count) entries but tokenizer.ggml.tokens has \(tokens.count)")
            }
            types = try raw.enumerated().map { i, t in
                guard let type = TokenType(rawValue: t) else {
                    throw GGUFError(field: "tokenizer.ggml.token_type", "entry \(i) has unknown type \(t)")
                }
                return type
            }
        } else {
            types = Array(repeating: .normal, count: tokens.count)
        }
        if m["tokenizer.ggml.scores"] != nil {
            scores = try m.floatArray("tokenizer.ggml.scores")
            guard scores.count == tokens.count else {
                throw GGUFError(field: "tokenizer.ggml.scores", "has \(scores.count) entries but tokenizer.ggml.tokens has \(tokens.count)")
            }
        } else {
            scores = Array(repeating: 0, count: tokens.count)
        }
        var ids: [String: Int] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where ids[t] == nil { ids[t] = i }

        func special(_ key: String) throws -> Int? {
            guard let id = try m.optionalInt("tokenizer.ggml.\(key)") else { return nil }
            guard id >= 0, id < tokens.count else {
                throw GGUFError(field: "tokenizer.ggml.\(key)", "token id \(id) is outside the vocabulary of \(tokens.count)")
            }
            return id
        }
        bos = try special("bos_token_id")
        eos = try special("eos_token_id")
        eot = try special("eot_token_id")
        unknown = try special("unknown_token_id")
        padding = try special("padding_token_id")
        let eom = try special("eom_token_id")
        addBOS = try m.optionalBool("tokenizer.ggml.add_bos_token") ?? false
        addEOS = try m.optionalBool("tokenizer.ggml.add_eos_token") ?? false
        if addBOS, bos == nil { throw GGUFError(field: "tokenizer.ggml.add_bos_token", "is true but there is no bos_token_id") }
        if addEOS, eos == nil { throw GGUFError(field: "tokenizer.ggml.add_eos_token", "is true but there is no eos_token_id") }

        var eog = Set([eos, eot, eom].compactMap { $0 })
        for (i, t) in tokens.enumerated() where types[i] == .control && Self.endOfTurnTexts.contains(t) { eog.insert(i) }
        endOfGeneration = eog
        self.tokens = tokens
        self.ids = ids
    }
}
