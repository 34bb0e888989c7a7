import GGUF
import Tokenizer
import XCTest

/// SentencePiece on a vocabulary small enough to work every case out by hand.
final class SentencePieceTests: XCTestCase {
    static let vocabulary: [(text: String, score: Float, type: Int32)] = [
        ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3),                 // 0 1 2
        ("\u{2581}", -5, 1), ("a", -5, 1), ("b", -5, 1), ("c", -5, 1),    // 3 4 5 6
        ("ab", -1, 1), ("bc", -1, 1), ("\u{2581}a", -3, 1),               // 7 8 9
        ("<0xC3>", 0, 6), ("<0xA9>", 0, 6), ("[x]", 0, 4),                // 10 11 12
    ]

    func tokenizer(addSpacePrefix: Bool?, bcScore: Float = -1) throws -> Tokenizer {
        let v = Self.vocabulary
        var m = GGUFMetadata([
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.tokens", .array(.string, v.map { .string($0.text) })),
            ("tokenizer.ggml.scores", .array(.float32, v.map { .float32($0.text == "bc" ? bcScore : $0.score) })),
            ("tokenizer.ggml.token_type", .array(.int32, v.map { .int32($0.type) })),
        ])
        if let addSpacePrefix { m["tokenizer.ggml.add_space_prefix"] = .bool(addSpacePrefix) }
        return try Tokenizer(metadata: m)
    }

    func testHighestScoringPairMergesFirstAndTiesGoLeft() throws {
        let tied = try tokenizer(addSpacePrefix: false)
        XCTAssertEqual(tied.encode("abc", addSpecial: false), [7, 6], "ab and bc tie at -1: the left pair merges")
        let bcFirst = try tokenizer(addSpacePrefix: false, bcScore: -0.5)
        XCTAssertEqual(bcFirst.encode("abc", addSpecial: false), [4, 8], "bc scores higher")
        XCTAssertEqual(tied.encode("abab", addSpecial: false), [7, 7])
    }

    func testSpacesAreEscapedAndPrefixedAfterEverySpecialToken() throws {
        let spm = try tokenizer(addSpacePrefix: nil)  // llama.cpp's default: prefix
        XCTAssertEqual(spm.encode("a b", addSpecial: false), [9, 3, 5], "▁a ▁ b: ▁b is no token")
        XCTAssertEqual(spm.encode("a b"), [1, 9, 3, 5], "BOS added by default")
        XCTAssertEqual(spm.encode("a<s>a", parseSpecial: true, addSpecial: false), [9, 1, 9], "▁ before the text and again after <s>")
        XCTAssertEqual(spm.encode("a<s>a", parseSpecial: false, addSpecial: false), [9, 0, 0, 0, 4],
                       "unparsed, <s> is text: ▁a, then <unk> for each of < s > (no token, no byte token), then a")
        XCTAssertEqual(spm.encode("b[x]a", addSpecial: false), [3, 5, 12, 9], "user-defined tokens are matched unparsed, and a ▁ follows them too")
        XCTAssertEqual(spm.decode([9, 3, 5]), "a b", "the prefix space is dropped from the first token")
        XCTAssertEqual(spm.decode([1, 9, 3, 5]), " a b", "after a leading BOS nothing is dropped, as in llama.cpp")
        XCTAssertEqual(spm.encode("a b", addSpecial: false, continuing: true), [4, 3, 5], "text that continues other text: no prefix")
        XCTAssertEqual(spm.encode("a[x]a", addSpecial: false, continuing: true), [4, 12, 9], "but after a user-defined token, as always")
        let plain = try tokenizer(addSpacePrefix: false)
        XCTAssertEqual(plain.encode("a b", addSpecial: false), [4, 3, 5])
        XCTAssertEqual(plain.decode([3, 4]), " a")
    }

    func testCharactersOutsideTheVocabularyFallBackToBytesThenUnknown() throws {
        let spm = try tokenizer(addSpacePrefix: false)
        XCTAssertEqual(spm.encode("\u{E9}a", addSpecial: false), [10, 11, 4], "é is C3 A9")
        XCTAssertEqual(spm.encode("\u{FC}", addSpecial: false), [10, 0], "ü is C3 BC; there is no <0xBC>")
        XCTAssertEqual(spm.decode([10, 11, 4]), "\u{E9}a")
        XCTAssertEqual(spm.decode([0]), "", "<unk> renders only when asked")
        XCTAssertEqual(spm.decode([0], renderSpecial: true), "<unk>")
    }
}
