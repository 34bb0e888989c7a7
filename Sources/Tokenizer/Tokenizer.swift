import GGUF

/// A valid file whose tokenizer Apus does not implement (not an invalid file).
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    case unsupportedModel(String)

    public var description: String {
        switch self {
        case .unsupportedModel(let kind): "tokenizer model '\(kind)' is not supported (supported: \(Tokenizer.supportedModels.joined(separator: ", ")))"
        }
    }
}

/// Text to token ids and back, built from a model's GGUF metadata.
///
/// Special tokens: with `parseSpecial`, the text of control tokens (such as
/// `<|im_start|>`) becomes those tokens; without it, such text is tokenized as ordinary
/// text. User-defined tokens are always matched, as llama.cpp does.
public struct Tokenizer: Sendable {
    public let vocabulary: Vocabulary
    let model: any SubwordModel
    /// Tokens matched in raw text before the subword model runs, longest text first.
    let specialTokens: [(id: Int, text: [UInt8], control: Bool)]

    /// The `tokenizer.ggml.model` values this tokenizer implements.
    public static let supportedModels = ["gpt2", "llama"]

    public init(metadata m: GGUFMetadata) throws {
        let kind = try m.string("tokenizer.ggml.model")
        guard Self.supportedModels.contains(kind) else {
            throw TokenizerError.unsupportedModel(kind)
        }
        let vocabulary = try Vocabulary(metadata: m)
        self.vocabulary = vocabulary
        switch kind {
        case "gpt2": model = try BytePairEncoding(vocabulary: vocabulary, metadata: m)
        default: model = try SentencePiece(vocabulary: vocabulary, metadata: m)
        }
        specialTokens = vocabulary.tokens.indices
            .filter { [.control, .userDefined, .unknown].contains(vocabulary.types[$0]) && !vocabulary.tokens[$0].isEmpty }
            .map { (id: $0, text: Array(vocabulary.tokens[$0].utf8), control: vocabulary.types[$0] != .userDefined) }
            .sorted { $0.text.count != $1.text.count ? $0.text.count > $1.text.count : $0.id < $1.id }
    }

    public init(file: GGUFFile) throws { try self.init(metadata: file.metadata) }

    /// Token ids for `text`. `addSpecial` adds BOS/EOS where the model's metadata asks for them.
    /// `continuing`: the text continues other text (a piece cut out of a longer one), so
    /// SentencePiece puts no space before it.
    public func encode(_ text: String, parseSpecial: Bool = false, addSpecial: Bool = true, continuing: Bool = false) -> [Int] {
        var out: [Int] = []
        if addSpecial, vocabulary.addBOS, let bos = vocabulary.bos { out.append(bos) }
        let utf8 = Array(text.utf8)
        // Otherwise the first fragment counts as following a special token (llama.cpp's
        // `is_prev_special` starts true), whether or not BOS was added.
        var afterSpecial = !continuing
        for fragment in partition(utf8, parseSpecial: parseSpecial) {
            switch fragment {
            case .token(let id):
                out.append(id)
                afterSpecial = true
            case .text(let range):
                model.encode(String(decoding: utf8[range], as: UTF8.self), afterSpecial: afterSpecial, into: &out)
                afterSpecial = false
            }
        }
        if addSpecial, vocabulary.addEOS, let eos = vocabulary.eos { out.append(eos) }
        return out
    }

    enum Fragment { case text(Range<Int>), token(Int) }

    /// Splits raw text around special-token texts, one special token at a time, longest
    /// first (the order of llama.cpp's `tokenizer_st_partition`, which decides overlaps).
    /// Matching is on bytes: a match of valid UTF-8 inside valid UTF-8 starts and ends on
    /// character boundaries, so every text fragment is valid UTF-8 again.
    func partition(_ text: [UInt8], parseSpecial: Bool) -> [Fragment] {
        guard !text.isEmpty else { return [] }
        // Which byte pairs occur anywhere in the text: a special token with a pair that does
        // not occur cannot match, which skips nearly all of Gemma's 6,000 control tokens.
        var pairs = [UInt64](repeating: 0, count: 1024)
        var present = [Bool](repeating: false, count: 256)
        for i in text.indices {
            present[Int(text[i])] = true
            if i + 1 < text.count {
                let p = Int(text[i]) << 8 | Int(text[i + 1])
                pairs[p >> 6] |= 1 << UInt64(p & 63)
            }
        }
        func mayOccur(_ t: [UInt8]) -> Bool {
            if t.count == 1 { return present[Int(t[0])] }
            for i in 0..<(t.count - 1) {
                let p = Int(t[i]) << 8 | Int(t[i + 1])
                if pairs[p >> 6] & (1 << UInt64(p & 63)) == 0 { return false }
            }
            return true
        }
        var fragments: [Fragment] = [.text(0..<text.count)]
        text.withUnsafeBufferPointer { bytes in
            for special in specialTokens where (parseSpecial || !special.control) && special.text.count <= text.count && mayOccur(special.text) {
                var next: [Fragment] = []
                next.reserveCapacity(fragments.count + 2)
                for fragment in fragments {
                    guard case .text(let range) = fragment, range.count >= special.text.count else {
                        next.append(fragment)
                        continue
                    }
                    var rest = range
                    while let match = Self.find(special.text, in: bytes, rest) {
                        if match > rest.lowerBound { next.append(.text(rest.lowerBound..<match)) }
                        next.append(.token(special.id))
                        rest = (match + special.text.count)..<rest.upperBound
                    }
                    if !rest.isEmpty { next.append(.text(rest)) }
                }
                fragments = next
            }
        }
        return fragments
    }

    /// The first offset in `range` of `needle` in `haystack`, or nil.
    private static func find(_ needle: [UInt8], in haystack: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int? {
        guard needle.count <= range.count else { return nil }
        let first = needle[0]
        var i = range.lowerBound
        let last = range.upperBound - needle.count
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count, haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }

    /// The bytes token `id` stands for, as llama.cpp's `token_to_piece` gives them: control
    /// and unknown tokens render as their text only when `renderSpecial` is set; unused and
    /// undefined tokens render as nothing.
    public func bytes(of id: Int, renderSpecial: Bool = false) -> [UInt8] {
        guard id >= 0, id < vocabulary.count else { return [] }
        let text = vocabulary.tokens[id]
        switch vocabulary.types[id] {
        case .control, .unknown: return renderSpecial ? Array(text.utf8) : []
        case .userDefined: return Array(text.utf8)
        case .normal: return model.bytes(ofPiece: text)
        case .byte: return Self.byteValue(text).map { [$0] } ?? model.bytes(ofPiece: text)
        case .unused, .undefined: return []
        }
    }

    /// The byte a byte token `<0xNN>` stands for.
    static func byteValue(_ text: String) -> UInt8? {
        let u = Array(text.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"), u[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    /// The text of a whole sequence of tokens (invalid UTF-8 replaced by U+FFFD). Where the
    /// encoder put a space before the text (SentencePiece's `add_space_prefix`), the first
    /// token's leading space is dropped, as llama.cpp's `detokenize` does; a leading BOS
    /// is that first token, so after one nothing is dropped.
    public func decode(_ ids: [Int], renderSpecial: Bool = false) -> String {
        var bytes: [UInt8] = []
        for (i, id) in ids.enumerated() {
            let piece = self.bytes(of: id, renderSpecial: renderSpecial)
            if i == 0, model.stripsLeadingSpace, piece.first == 0x20 { bytes += piece.dropFirst() } else { bytes += piece }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public func isEndOfGeneration(_ id: Int) -> Bool { vocabulary.endOfGeneration.contains(id) }
}

/// The subword algorithm of a vocabulary: byte-level BPE or SentencePiece.
protocol SubwordModel: Sendable {
    /// Appends the ids of `text`, which contains no special-token text. `afterSpecial`: the
    /// text starts the input or follows a special token (where SentencePiece may add a space).
    func encode(_ text: String, afterSpecial: Bool, into out: inout [Int])
    /// The bytes an ordinary token's text stands for.
    func bytes(ofPiece text: String) -> [UInt8]
    /// Whether decoding drops the space the encoder put before the text.
    var stripsLeadingSpace: Bool { get }
}

extension SubwordModel {
    var stripsLeadingSpace: Bool { false }
}

/// Turns a stream of tokens into a stream of text without ever splitting a UTF-8
/// sequence: a token that ends inside a multi-byte character yields nothing until the
/// character is complete.
public struct StreamingDecoder {
    private let tokenizer: Tokenizer
    private let renderSpecial: Bool
    /// Control tokens shown as their text even without `renderSpecial`.
    private let shown: Set<Int>
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer, renderSpecial: Bool = false, shown: Set<Int> = []) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
        self.shown = shown
    }

    /// The text that token `id` completes (possibly empty).
    public mutating func append(_ id: Int) -> String {
        pending += tokenizer.bytes(of: id, renderSpecial: renderSpecial || shown.contains(id))
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
