import Foundation
import GGUF
import TestSupport
import Tokenizer
import XCTest

final class GoldenTokenizationTests: XCTestCase {
    func testEveryGoldenTokenizationMatchesLlamaCpp() throws {
        let tokenizer = try Tokenizer(file: TestSupport.model())
        let cases = try TestSupport.jsonLines("tokenize.jsonl")
        XCTAssertGreaterThan(cases.count, 20)
        for c in cases {
            let text = c["text"] as! String
            XCTAssertEqual(tokenizer.encode(text, parseSpecial: true), c["ids_parse_special"] as! [Int], "parse_special: \(text.debugDescription)")
            XCTAssertEqual(tokenizer.encode(text, parseSpecial: false), c["ids_plain"] as! [Int], "plain: \(text.debugDescription)")
        }
    }

    func testDecodingRoundTripsGoldenTexts() throws {
        let tokenizer = try Tokenizer(file: TestSupport.model())
        for c in try TestSupport.jsonLines("tokenize.jsonl") {
            let text = c["text"] as! String
            XCTAssertEqual(tokenizer.decode(c["ids_plain"] as! [Int]), text)
            XCTAssertEqual(tokenizer.decode(c["ids_parse_special"] as! [Int], renderSpecial: true), text)
        }
    }

    func testSpecialTokensAndEndOfGeneration() throws {
        let tokenizer = try Tokenizer(file: TestSupport.model())
        XCTAssertEqual(tokenizer.encode("<|im_start|>user", parseSpecial: true).first, 1)
        XCTAssertNotEqual(tokenizer.encode("<|im_start|>user", parseSpecial: false).first, 1)
        XCTAssertTrue(tokenizer.isEndOfGeneration(2))  // <|im_end|>, the EOS
        XCTAssertTrue(tokenizer.isEndOfGeneration(0))  // <|endoftext|>
        XCTAssertFalse(tokenizer.isEndOfGeneration(1))
        XCTAssertFalse(tokenizer.vocabulary.addBOS)
        XCTAssertEqual(tokenizer.decode([1, 2]), "", "control tokens are not rendered unless asked")
    }
}
