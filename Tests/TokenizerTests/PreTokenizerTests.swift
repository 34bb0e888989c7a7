@testable import Tokenizer
import XCTest

final class PreTokenizerTests: XCTestCase {
    func testGPT2Splitting() {
        let gpt2 = PreTokenizer.gpt2(splitDigits: false)
        XCTAssertEqual(gpt2.split("Hello  world's 123!!  \n"), ["Hello", " ", " world", "'s", " 123", "!!", "  \n"])
        XCTAssertEqual(gpt2.split("a\tb"), ["a", "\t", "b"])
        let smollm = PreTokenizer.gpt2(splitDigits: true)
        XCTAssertEqual(smollm.split("in 2024."), ["in", " ", "2", "0", "2", "4", "."])
    }

    func testLlama3Splitting() {
        let llama3 = PreTokenizer.llama3(maxDigits: 3)
        XCTAssertEqual(llama3.split("I'M 12345 (ok)\n\n  x"), ["I", "'M", " ", "123", "45", " (", "ok", ")\n\n", " ", " x"])
        XCTAssertEqual(llama3.split("a  \n b"), ["a", "  \n", " b"])
        let qwen2 = PreTokenizer.llama3(maxDigits: 1)
        XCTAssertEqual(qwen2.split("x=42"), ["x", "=", "4", "2"])
    }

    func testStreamingDecoderHoldsBackIncompleteUTF8() {
        XCTAssertEqual(StreamingDecoder.completePrefixLength([0x61, 0xE6]), 1)
        XCTAssertEqual(StreamingDecoder.completePrefixLength([0x61, 0xE6, 0x97]), 1)
        XCTAssertEqual(StreamingDecoder.completePrefixLength([0x61, 0xE6, 0x97, 0xA5]), 4)
        XCTAssertEqual(StreamingDecoder.completePrefixLength([0xF0, 0x9F, 0x98]), 0)
        XCTAssertEqual(StreamingDecoder.completePrefixLength([0x80]), 1, "a stray continuation byte is passed on (as U+FFFD)")
    }
}
