import GGUF
import Tokenizer
import XCTest

/// Tokenizer metadata that llama.cpp's loader would refuse is refused here too, with the
/// key named and the types found and expected.
final class VocabularyMetadataTests: XCTestCase {
    /// A four-token SentencePiece vocabulary, as llama.cpp's writers store one.
    func metadata(_ changes: [(String, GGUFValue?)] = []) -> GGUFMetadata {
        var m = GGUFMetadata([
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.tokens", .array(.string, ["<unk>", "<s>", "</s>", "a"].map { .string($0) })),
            ("tokenizer.ggml.scores", .array(.float32, [0, 0, 0, -1].map { .float32($0) })),
            ("tokenizer.ggml.token_type", .array(.int32, [2, 3, 3, 1].map { .int32($0) })),
        ])
        for (key, value) in changes { m[key] = value }
        return m
    }

    func assertRefused(_ changes: [(String, GGUFValue?)], _ expected: GGUFError, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Tokenizer(metadata: metadata(changes)), file: file, line: line) {
            XCTAssertEqual($0 as? GGUFError, expected, file: file, line: line)
        }
        // The same through a real file: the element type survives writing and reading.
        XCTAssertThrowsError(try Tokenizer(file: GGUFFile(bytes: GGUFWriter(metadata: metadata(changes)).encode())), file: file, line: line) {
            XCTAssertEqual($0 as? GGUFError, expected, file: file, line: line)
        }
    }

    func testTheWellFormedVocabularyLoads() throws {
        let tokenizer = try Tokenizer(metadata: metadata())
        XCTAssertEqual(tokenizer.vocabulary.types, [.unknown, .control, .control, .normal])
        XCTAssertEqual(tokenizer.vocabulary.scores, [0, 0, 0, -1])
        // llama.cpp's SentencePiece defaults: unk 0, bos 1, eos 2, BOS added.
        XCTAssertEqual(tokenizer.vocabulary.unknown, 0)
        XCTAssertEqual(tokenizer.vocabulary.bos, 1)
        XCTAssertEqual(tokenizer.vocabulary.eos, 2)
        XCTAssertTrue(tokenizer.vocabulary.addBOS)
        // Integer scores are read as llama.cpp reads them.
        let integerScores = try Tokenizer(metadata: metadata([("tokenizer.ggml.scores", .array(.int32, [0, 0, 0, -1].map { .int32($0) }))]))
        XCTAssertEqual(integerScores.vocabulary.scores, [0, 0, 0, -1])
    }

    func testTokenTypesStoredAsAnythingButInt32AreRefused() {
        assertRefused([("tokenizer.ggml.token_type", .array(.uint8, [2, 3, 3, 1].map { .uint8($0) }))],
                      GGUFError(field: "tokenizer.ggml.token_type", "is an array of uint8, expected an array of int32"))
        assertRefused([("tokenizer.ggml.token_type", .array(.int64, [2, 3, 3, 1].map { .int64($0) }))],
                      GGUFError(field: "tokenizer.ggml.token_type", "is an array of int64, expected an array of int32"))
        assertRefused([("tokenizer.ggml.token_type", .int32(1))],
                      GGUFError(field: "tokenizer.ggml.token_type", "is a single int32, expected an array of int32"))
    }

    func testScoresTokensAndMergesOfTheWrongElementTypeAreRefused() {
        assertRefused([("tokenizer.ggml.scores", .array(.float64, [0, 0, 0, -1].map { .float64($0) }))],
                      GGUFError(field: "tokenizer.ggml.scores", "is an array of float64, expected an array of float32 or int32"))
        assertRefused([("tokenizer.ggml.tokens", .array(.int32, [0, 1, 2, 3].map { .int32($0) }))],
                      GGUFError(field: "tokenizer.ggml.tokens", "is an array of int32, expected an array of string"))
        assertRefused([("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.merges", .array(.int32, [.int32(1)]))],
                      GGUFError(field: "tokenizer.ggml.merges", "is an array of int32, expected an array of string"))
        assertRefused([("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.merges", nil)],
                      GGUFError(field: "tokenizer.ggml.merges", "missing"))
    }

    func testArraysOfTheWrongLengthAreRefused() {
        assertRefused([("tokenizer.ggml.token_type", .array(.int32, [2, 3, 3].map { .int32($0) }))],
                      GGUFError(field: "tokenizer.ggml.token_type", "has 3 entries but tokenizer.ggml.tokens has 4"))
        assertRefused([("tokenizer.ggml.scores", .array(.float32, [0, 0, 0, 0, 0].map { .float32($0) }))],
                      GGUFError(field: "tokenizer.ggml.scores", "has 5 entries but tokenizer.ggml.tokens has 4"))
        assertRefused([("tokenizer.ggml.tokens", .array(.string, []))],
                      GGUFError(field: "tokenizer.ggml.tokens", "vocabulary of 0 tokens is outside 1...2097152"))
        assertRefused([("tokenizer.ggml.token_type", .array(.int32, [2, 3, 3, 9].map { .int32($0) }))],
                      GGUFError(field: "tokenizer.ggml.token_type", "entry 3 has unknown type 9"))
    }

    func testRepeatedTokenTextsAreRefused() {
        // llama.cpp asserts that no two tokens share a text; canonically equivalent texts
        // (U+00E0 and a + U+0300) are different bytes and may coexist.
        assertRefused([("tokenizer.ggml.tokens", .array(.string, ["<unk>", "<s>", "a", "a"].map { .string($0) }))],
                      GGUFError(field: "tokenizer.ggml.tokens", "token 3 has the same text as token 2: 'a'"))
        XCTAssertNoThrow(try Tokenizer(metadata: metadata([("tokenizer.ggml.tokens", .array(.string, ["<unk>", "<s>", "\u{E0}", "a\u{300}"].map { .string($0) }))])))
    }

    /// llama.cpp's corrections by token text: o200k_harmony's `<|end|>` ends a message, not
    /// generation, when `<|return|>` and `<|call|>` exist; gpt-oss's channel markers are
    /// always rendered; FIM separators end generation.
    func testSpecialTokensRecognisedByText() throws {
        let texts = ["<unk>", "<s>", "<|end|>", "<|return|>", "<|call|>", "<|channel|>", "<|file_sep|>", "a"]
        let tokenizer = try Tokenizer(metadata: metadata([
            ("tokenizer.ggml.tokens", .array(.string, texts.map { .string($0) })),
            ("tokenizer.ggml.scores", nil), ("tokenizer.ggml.token_type", nil),
            ("tokenizer.ggml.eos_token_id", .uint32(3)),
        ]))
        let v = tokenizer.vocabulary
        XCTAssertEqual(v.types, [.normal, .normal, .userDefined, .control, .control, .userDefined, .control, .normal])
        XCTAssertEqual(v.endOfGeneration, [3, 4, 6])
        XCTAssertEqual(v.eot, 2, "<|end|> is still the end-of-turn token")
        let plain = try Tokenizer(metadata: metadata([
            ("tokenizer.ggml.tokens", .array(.string, ["<unk>", "<s>", "<|end|>", "a"].map { .string($0) })),
        ]))
        XCTAssertEqual(plain.vocabulary.endOfGeneration, [2], "without <|return|> and <|call|>, <|end|> (also the default EOS) ends generation")
    }

    func testUnsupportedTokenizerModelsAreNamed() {
        XCTAssertThrowsError(try Tokenizer(metadata: metadata([("tokenizer.ggml.model", .string("xyz"))]))) {
            XCTAssertEqual($0 as? TokenizerError, .unsupportedModel("xyz"))
            XCTAssertEqual("\($0)", "tokenizer model 'xyz' is not supported (supported: gpt2, llama)", "a valid file is not called invalid")
        }
        assertRefused([("tokenizer.ggml.model", nil)], GGUFError(field: "tokenizer.ggml.model", "missing"))
    }
}
