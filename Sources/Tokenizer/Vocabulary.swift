import GGUF

/// The token table of a model, read from `tokenizer.ggml.*` metadata and validated: array
/// types and lengths, and every special id inside the vocabulary.
public struct Vocabulary: Sendable {
    /// How a token is treated (`tokenizer.ggml.token_type`, numbered as in llama.cpp).
    public enum TokenType: Int, Sendable {
        case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public let tokens: [String]
    /// The types the file gives, with llama.cpp's corrections by text (`SpecialTokenTexts`).
    public let types: [TokenType]
    public let scores: [Float]
    /// Exact token texts to ids (see `PieceTable` for why not a `[String: Int]`).
    let pieces: PieceTable
    public let bos: Int?
    public let eos: Int?
    public let eot: Int?
    public let unknown: Int?
    public let padding: Int?
    public let addBOS: Bool
    public let addEOS: Bool
    /// Tokens that end generation: EOS, EOT, EOM, the FIM pad, repository and file
    /// separator tokens, and the tokens whose text conventionally ends a turn (as llama.cpp
    /// collects them).
    public let endOfGeneration: Set<Int>

    public var count: Int { tokens.count }
    /// The longest token text in UTF-8 bytes, at least as many bytes as any one token
    /// stands for (stored forms such as `▁`, `Ġ` or `<0x0A>` are never shorter than the
    /// bytes they encode): a text of n bytes is at least n / this many tokens.
    public let longestTokenBytes: Int

    /// The id of the token whose text is exactly `text` (byte for byte), or nil.
    public func id(of text: String) -> Int? { pieces.id(of: text) }

    public init(metadata m: GGUFMetadata) throws {
        // The element types llama.cpp's loader accepts (`llama_vocab::impl::load`): anything
        // else is a file that llama.cpp refuses too, and we say which type we found.
        guard let tokenValues = try Self.array("tokenizer.ggml.tokens", of: [.string], in: m) else {
            throw GGUFError(field: "tokenizer.ggml.tokens", "missing")
        }
        let tokens = try tokenValues.enumerated().map { i, v in
            guard let s = v.stringValue else { throw GGUFError(field: "tokenizer.ggml.tokens", "entry \(i) is a \(v.type), not a string") }
            return s
        }
        guard !tokens.isEmpty, tokens.count <= 1 << 21 else {
            throw GGUFError(field: "tokenizer.ggml.tokens", "vocabulary of \(tokens.count) tokens is outside 1...\(1 << 21)")
        }
        let fileTypes: [TokenType]
        if let raw = try Self.array("tokenizer.ggml.token_type", of: [.int32], in: m) {
            guard raw.count == tokens.count else {
                throw GGUFError(field: "tokenizer.ggml.token_type", "has \(raw.count) entries but tokenizer.ggml.tokens has \(tokens.count)")
            }
            fileTypes = try raw.enumerated().map { i, t in
                guard let type = t.intValue.flatMap(TokenType.init(rawValue:)) else {
                    throw GGUFError(field: "tokenizer.ggml.token_type", "entry \(i) has unknown type \(t.intValue.map { "\($0)" } ?? "\(t)")")
                }
                return type
            }
        } else {
            fileTypes = Array(repeating: .normal, count: tokens.count)
        }
        // llama.cpp reads integer scores too (`iscores`), converting them to float.
        if let raw = try Self.array("tokenizer.ggml.scores", of: [.float32, .int32], in: m) {
            guard raw.count == tokens.count else {
                throw GGUFError(field: "tokenizer.ggml.scores", "has \(raw.count) entries but tokenizer.ggml.tokens has \(tokens.count)")
            }
            scores = try raw.enumerated().map { i, v in
                guard let d = v.doubleValue else { throw GGUFError(field: "tokenizer.ggml.scores", "entry \(i) is a \(v.type), not a number") }
                return Float(d)
            }
        } else {
            scores = Array(repeating: 0, count: tokens.count)
        }
        longestTokenBytes = tokens.reduce(1) { max($0, $1.utf8.count) }
        do {
            pieces = try PieceTable(tokens)
        } catch let d as PieceTable.Duplicate {
            // llama.cpp asserts that every text is distinct (`id_to_token.size() == token_to_id.size()`).
            throw GGUFError(field: "tokenizer.ggml.tokens", "token \(d.second) has the same text as token \(d.first): '\(tokens[d.first].prefix(40))'")
        }

        // A SentencePiece file may leave these out: llama.cpp then assumes LLaMA's `<unk>` 0,
        // `<s>` 1 and `</s>` 2 (where the vocabulary has them) and adds BOS.
        let sentencePiece = try m.optionalString("tokenizer.ggml.model") == "llama"
        func special(_ key: String, default fallback: Int? = nil) throws -> Int? {
            guard let id = try m.optionalInt("tokenizer.ggml.\(key)") else { return fallback.flatMap { $0 < tokens.count ? $0 : nil } }
            guard id >= 0, id < tokens.count else {
                throw GGUFError(field: "tokenizer.ggml.\(key)", "token id \(id) is outside the vocabulary of \(tokens.count)")
            }
            return id
        }
        bos = try special("bos_token_id", default: sentencePiece ? 1 : nil)
        eos = try special("eos_token_id", default: sentencePiece ? 2 : nil)
        let eot = try special("eot_token_id")
        unknown = try special("unknown_token_id", default: sentencePiece ? 0 : nil)
        padding = try special("padding_token_id")
        let eom = try special("eom_token_id")
        addBOS = try m.optionalBool("tokenizer.ggml.add_bos_token") ?? sentencePiece
        addEOS = try m.optionalBool("tokenizer.ggml.add_eos_token") ?? false
        if addBOS, bos == nil { throw GGUFError(field: "tokenizer.ggml.add_bos_token", "is true but there is no bos_token_id") }
        if addEOS, eos == nil { throw GGUFError(field: "tokenizer.ggml.add_eos_token", "is true but there is no eos_token_id") }

        func fim(_ key: String, deprecated: String? = nil) throws -> Int? {
            if let id = try special(key) { return id }
            return try deprecated.flatMap { try special($0) }
        }
        let detected = try SpecialTokenTexts(
            types: fileTypes, pieces: pieces, eos: eos, eot: eot, eom: eom,
            fim: (prefix: fim("fim_pre_token_id", deprecated: "prefix_token_id"), suffix: fim("fim_suf_token_id", deprecated: "suffix_token_id"),
                  middle: fim("fim_mid_token_id", deprecated: "middle_token_id"), pad: fim("fim_pad_token_id"),
                  repo: fim("fim_rep_token_id"), separator: fim("fim_sep_token_id")))
        types = detected.types
        self.eot = detected.eot
        endOfGeneration = detected.endOfGeneration
        self.tokens = tokens
    }

    /// The elements of array `key`, nil when the key is absent; an array of another element
    /// type, or a value that is not an array, is an error naming both types.
    static func array(_ key: String, of expected: [GGUFValueType], in m: GGUFMetadata) throws -> [GGUFValue]? {
        guard let value = m[key] else { return nil }
        let wanted = expected.map { "\($0)" }.joined(separator: " or ")
        guard case .array(let type, let elements) = value else {
            throw GGUFError(field: key, "is a single \(value.type), expected an array of \(wanted)")
        }
        guard expected.contains(type) else {
            throw GGUFError(field: key, "is an array of \(type), expected an array of \(wanted)")
        }
        return elements
    }
}
