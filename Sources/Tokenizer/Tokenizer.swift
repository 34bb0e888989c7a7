import GGUF

/// Text to token ids and back, built from a model's GGUF metadata.
///
/// Special tokens: with `parseSpecial`, the text of control tokens (such as
/// `<|im_start|>`) becomes those tokens; without it, such text is tokenized as ordinary
/// text. User-defined tokens are always matched, as llama.cpp does.
public struct Tokenizer: Sendable {
    public let vocabulary: Vocabulary
    let model: any SubwordModel
    /// Tokens matched in raw text before BPE, longest text first.
    let specialTokens: [(id: Int, text: String, control: Bool)]

    public init(metadata m: GGUFMetadata) throws {
        let kind = try m.string("tokenizer.ggml.model")
        let vocabulary = try Vocabulary(metadata: m)
        self.vocabulary = vocabulary
        switch kind {
        case "gpt2": model = try BytePairEncoding(vocabulary: vocabulary, metadata: m)
        default:
            // SentencePiece (`llama`) arrives with the next architecture, as another SubwordModel.
            throw GGUFError(field: "tokenizer.ggml.model", "tokenizer model '\(kind)' is not supported (supported: gpt2)")
        }
        specialTokens = vocabulary.tokens.indices
            .filter { [.control, .userDefined, .unknown].contains(vocabulary.types[$0]) && !vocabulary.tokens[$0].isEmpty }
            .map { (id: $0, text: vocabulary.tokens[$0], control: vocabulary.types[$0] != .userDefined) }
            .sorted { $0.text.utf8.count != $1.text.utf8.count ? $0.text.utf8.count > $1.text.utf8.count : $0.id < $1.id }
    }

    public init(file: GGUFFile) throws { try self.init(metadata: file.metadata) }

    /// Token ids for `text`. `addSpecial` adds BOS/EOS where the model's metadata asks for them.
    public func encode(_ text: String, parseSpecial: Bool = false, addSpecial: Bool = true) -> [Int] {
        var out: [Int] = []
        if addSpecial, vocabulary.addBOS, let bos = vocabulary.bos { out.append(bos) }
        for fragment in partition(text, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id): out.append(id)
            case .text(let s): model.encode(s, into: &out)
            }
        }
        if addSpecial, vocabulary.addEOS, let eos = vocabulary.eos { out.append(eos) }
        return out
    }

    enum Fragment { case text(String), token(Int) }

    /// Splits raw text around special-token texts, longest special token first (the order
    /// llama.cpp's `tokenizer_st_partition` uses).
    func partition(_ text: String, parseSpecial: Bool) -> [Fragment] {
        var fragments: [Fragment] = [.text(text)]
        for special in specialTokens where parseSpecial || !special.control {
            var next: [Fragment] = []
            for fragment in fragments {
                guard case .text(let s) = fragment, s.utf8.count >= special.text.utf8.count else {
                    next.append(fragment)
                    continue
                }
                var rest = Substring(s)
                while let r = rest.range(of: special.text, options: .literal) {
                    if r.lowerBound > rest.startIndex { next.append(.text(String(rest[..<r.lowerBound]))) }
                    next.append(.token(special.id))
                    rest = rest[r.upperBound...]
                }
                if !rest.isEmpty { next.append(.text(String(rest))) }
            }
            fragments = next
        }
        return fragments
    }

    /// The bytes token `id` stands for. Control tokens render as their text only when
    /// `renderSpecial` is set.
    public func bytes(of id: Int, renderSpecial: Bool = false) -> [UInt8] {
        guard id >= 0, id < vocabulary.count else { return [] }
        let text = vocabulary.tokens[id]
        switch vocabulary.types[id] {
        case .control, .unknown: return renderSpecial ? Array(text.utf8) : []
        case .userDefined: return Array(text.utf8)
        default: return model.bytes(ofPiece: text)
        }
    }

    /// The text of a whole sequence of tokens (invalid UTF-8 replaced by U+FFFD).
    public func decode(_ ids: [Int], renderSpecial: Bool = false) -> String {
        String(decoding: ids.flatMap { bytes(of: $0, renderSpecial: renderSpecial) }, as: UTF8.self)
    }

    public func isEndOfGeneration(_ id: Int) -> Bool { vocabulary.endOfGeneration.contains(id) }
}

/// The subword algorithm of a vocabulary: byte-level BPE now, SentencePiece next.
protocol SubwordModel: Sendable {
    /// Appends the ids of `text`, which contains no special-token text.
    func encode(_ text: String, into out: inout [Int])
    /// The bytes an ordinary token's text stands for.
    func bytes(ofPiece text: String) -> [UInt8]
}

/// Turns a stream of tokens into a stream of text without ever splitting a UTF-8
/// sequence: a token that ends inside a multi-byte character yields nothing until the
/// character is complete.
public struct StreamingDecoder {
    private let tokenizer: Tokenizer
    private let renderSpecial: Bool
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
    }

    /// The text that token `id` completes (possibly empty).
    public mutating func append(_ id: Int) -> String {
        pending += tokenizer.bytes(of: id, renderSpecial: renderSpecial)
        let complete = Self.completePrefixLength(pending)
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Whatever is still held back (an incomplete sequence at the very end), replaced.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix that does not end inside a (possibly valid) UTF-8
    /// sequence. Invalid bytes count as complete; they decode to U+FFFD.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        // Look back at most 3 bytes for the start of an unfinished sequence.
        var i = n - 1
        while i >= 0, i >= n - 4 {
            let b = bytes[i]
            if b & 0xC0 != 0x80 {
                let length = b < 0x80 ? 1 : b >= 0xF0 && b < 0xF8 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                return i + length > n ? i : n
            }
            i -= 1
        }
        return n
    }
}
