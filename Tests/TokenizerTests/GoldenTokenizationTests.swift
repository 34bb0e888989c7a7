import Foundation
import GGUF
import TestSupport
import Tokenizer
import XCTest

/// llama.cpp's tokenizations of the same texts (`tokenize.jsonl`, `greedy.jsonl`), for each
/// model: SmolLM2 (BPE, `smollm`), Qwen2.5-Coder (BPE, `qwen2`), Gemma 3 (SentencePiece).
final class GoldenTokenizationTests: XCTestCase {
    static let models: [TestModel] = [.smolLM2, .qwen05, .gemma3]

    func testEveryGoldenTokenizationMatchesLlamaCpp() throws {
        for model in Self.models {
            let tokenizer = try Tokenizer(file: TestSupport.model(model))
            let cases = try TestSupport.jsonLines("tokenize.jsonl", model: model)
            XCTAssertGreaterThan(cases.count, 20)
            for c in cases {
                let text = c["text"] as! String
                // The goldens were made with add_special false.
                XCTAssertEqual(tokenizer.encode(text, parseSpecial: true, addSpecial: false), c["ids_parse_special"] as! [Int],
                               "\(model.fileName) parse_special: \(text.debugDescription)")
                XCTAssertEqual(tokenizer.encode(text, parseSpecial: false, addSpecial: false), c["ids_plain"] as! [Int],
                               "\(model.fileName) plain: \(text.debugDescription)")
            }
        }
    }

    func testDecodingRoundTripsGoldenTexts() throws {
        for model in Self.models {
            let tokenizer = try Tokenizer(file: TestSupport.model(model))
            for c in try TestSupport.jsonLines("tokenize.jsonl", model: model) {
                let text = c["text"] as! String
                XCTAssertEqual(tokenizer.decode(c["ids_plain"] as! [Int]), text, "\(model.fileName)")
                XCTAssertEqual(tokenizer.decode(c["ids_parse_special"] as! [Int], renderSpecial: true), text, "\(model.fileName)")
            }
        }
    }

    /// The prompts llama-server tokenized for the greedy runs, with the BOS it added.
    func testGreedyPromptsTokenizeAsLlamaServerDid() throws {
        for model in [TestModel.qwen05, .gemma3] {
            let tokenizer = try Tokenizer(file: TestSupport.model(model))
            let cases = try TestSupport.jsonLines("greedy.jsonl", model: model)
            XCTAssertEqual(cases.count, 10)
            for c in cases {
                let prompt = c["prompt"] as! String
                let expected = c["prompt_ids"] as! [Int]
                XCTAssertEqual(tokenizer.encode(prompt, parseSpecial: true), expected, "\(model.fileName): \(prompt.debugDescription)")
                XCTAssertEqual(expected.first == 2, model == .gemma3, "\(model.fileName) starts with BOS exactly when it is Gemma")
            }
        }
    }

    func testSpecialTokensAndEndOfGeneration() throws {
        let tokenizer = try Tokenizer(file: TestSupport.model())
        XCTAssertEqual(tokenizer.encode("<|im_start|>user", parseSpecial: true).first, 1)
        XCTAssertNotEqual(tokenizer.encode("<|im_start|>user", parseSpecial: false).first, 1)
        XCTAssertTrue(tokenizer.isEndOfGeneration(2))  // <|im_end|>, the EOS
        XCTAssertTrue(tokenizer.isEndOfGeneration(0))  // <|endoftext|>
        XCTAssertFalse(tokenizer.isEndOfGeneration(1))
        XCTAssertTrue(tokenizer.isEndOfGeneration(4), "<reponame>, a FIM repository token by its text, as in llama.cpp")
        XCTAssertFalse(tokenizer.vocabulary.addBOS)
        XCTAssertEqual(tokenizer.decode([1, 2]), "", "control tokens are not rendered unless asked")
    }

    func testQwenSpecialTokens() throws {
        let tokenizer = try Tokenizer(file: TestSupport.model(.qwen05))
        let v = tokenizer.vocabulary
        XCTAssertFalse(v.addBOS)
        XCTAssertEqual(v.eos, 151645)
        XCTAssertEqual(tokenizer.encode("<|im_start|>user\nhi<|im_end|>", parseSpecial: true), [151644, 872, 198, 6023, 151645])
        XCTAssertEqual(tokenizer.encode("hi", addSpecial: true), [6023], "Qwen adds no BOS")
        // <tool_call> is user-defined, so it is matched even without special-token parsing.
        XCTAssertEqual(tokenizer.encode("<tool_call>", parseSpecial: false), [151657])
        XCTAssertTrue(tokenizer.isEndOfGeneration(151645))  // <|im_end|>
        XCTAssertTrue(tokenizer.isEndOfGeneration(151643))  // <|endoftext|>
        XCTAssertEqual(tokenizer.decode([151665]), "", "unused tokens ([PAD151665]) render as nothing")
        // As llama.cpp, by text: <|fim_pad|>, <|repo_name|> and <|file_sep|> end generation, and so
        // does </s> (a normal token in the file), which becomes a control token.
        for id in [151662, 151663, 151664, 128247] { XCTAssertTrue(tokenizer.isEndOfGeneration(id), "\(id)") }
        XCTAssertEqual(v.types[128247], .control)
        XCTAssertEqual(tokenizer.encode("</s>", parseSpecial: true), [128247])
        XCTAssertEqual(tokenizer.decode([128247]), "")
        XCTAssertEqual(tokenizer.decode([128247], renderSpecial: true), "</s>")
    }

    func testGemmaSentencePieceBasics() throws {
        let tokenizer = try Tokenizer(file: TestSupport.model(.gemma3))
        let v = tokenizer.vocabulary
        XCTAssertEqual(v.count, 262_144)
        XCTAssertTrue(v.addBOS)
        XCTAssertEqual(v.bos, 2)
        XCTAssertEqual(v.eos, 1)
        XCTAssertEqual(tokenizer.encode("Hello world"), [2, 9259, 1902], "BOS 2, no space prefix (add_space_prefix is false)")
        XCTAssertEqual(tokenizer.encode("Hello world", addSpecial: false), [9259, 1902])
        XCTAssertEqual(tokenizer.encode(""), [2])
        XCTAssertEqual(tokenizer.encode("", addSpecial: false), [])
        XCTAssertEqual(tokenizer.decode([2, 9259, 1902]), "Hello world")
        XCTAssertEqual(tokenizer.decode([2, 9259, 1902], renderSpecial: true), "<bos>Hello world")
        // Byte fallback: U+10FFFF is no token, so its four UTF-8 bytes become <0xF4> <0x8F> <0xBF> <0xBF>
        // (ids 238 + byte).
        XCTAssertEqual(tokenizer.encode("\u{10FFFF}", addSpecial: false), [238 + 0xF4, 238 + 0x8F, 238 + 0xBF, 238 + 0xBF])
        XCTAssertEqual(tokenizer.decode([238 + 0xF4, 238 + 0x8F, 238 + 0xBF, 238 + 0xBF]), "\u{10FFFF}")
        // Canonically equivalent tokens stay apart: precomposed "▁là" and decomposed "▁la" + U+0300.
        XCTAssertEqual(v.id(of: "\u{2581}l\u{E0}"), 3244)
        XCTAssertEqual(v.id(of: "\u{2581}la\u{300}"), 127_866)
        XCTAssertEqual(tokenizer.encode(" l\u{E0}", addSpecial: false), [3244])
        XCTAssertEqual(tokenizer.encode(" la\u{300}", addSpecial: false), [127_866])
        XCTAssertTrue(tokenizer.isEndOfGeneration(1))  // <eos>
        XCTAssertTrue(tokenizer.isEndOfGeneration(106))  // <end_of_turn>
        // </s> is user-defined in the file; llama.cpp makes it a control token that ends
        // generation, so unparsed it is ordinary text.
        XCTAssertTrue(tokenizer.isEndOfGeneration(212))
        XCTAssertEqual(tokenizer.encode("</s>", parseSpecial: true, addSpecial: false), [212])
        let plain = tokenizer.encode("</s>", parseSpecial: false, addSpecial: false)
        XCTAssertFalse(plain.contains(212))
        XCTAssertEqual(tokenizer.decode(plain), "</s>")
    }

    /// A long input (no pre-tokenizer splits SentencePiece text) encodes in near-linear time.
    func testGemmaEncodesLongTextQuickly() throws {
        let tokenizer = try Tokenizer(file: TestSupport.model(.gemma3))
        let paragraph = "The common swift (Apus apus) spends most of its life in the air, feeding, drinking and even sleeping on the wing. "
        let text = String(repeating: paragraph, count: 400)  // 46,000 characters
        let start = Date()
        let ids = tokenizer.encode(text, addSpecial: false)
        let seconds = Date().timeIntervalSince(start)
        XCTAssertEqual(tokenizer.decode(ids), text)
        XCTAssertLessThan(seconds, 10, "debug build; a quadratic rescan would take minutes")
    }
}
