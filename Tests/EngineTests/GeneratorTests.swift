import Engine
import Foundation
import GGUF
import Models
import TestSupport
import Tokenizer
import XCTest

final class GeneratorTests: XCTestCase {
    func makeGenerator(context: Int = 256) throws -> Generator {
        let file = try TestSupport.model()
        return Generator(model: try ModelRegistry.load(file), tokenizer: try Tokenizer(file: file), contextLength: context)
    }

    func testStreamedTextEqualsTheResultAndEndsOnEndOfGeneration() throws {
        let generator = try makeGenerator()
        let template = try XCTUnwrap(try ChatTemplate(metadata: TestSupport.model().metadata))
        let prompt = generator.tokenizer.encode(try template.render([(role: "user", content: "Say hello.")], tokenizer: generator.tokenizer), parseSpecial: true)
        var streamed = ""
        var parameters = GenerationParameters()
        parameters.sampling = .greedy
        parameters.maxTokens = 64
        let result = try generator.generate(prompt: prompt, parameters: parameters) { streamed += $0; return true }
        XCTAssertEqual(streamed, result.text)
        XCTAssertEqual(result.finishReason, .stop)
        XCTAssertEqual(result.tokens.last, 2, "the end-of-generation token is reported last")
        XCTAssertFalse(result.text.contains("<|im_end|>"))
        XCTAssertEqual(result.text, generator.tokenizer.decode(Array(result.tokens.dropLast())))
    }

    func testMaxTokensStopStringsAndSeeds() throws {
        let generator = try makeGenerator()
        let prompt = generator.tokenizer.encode("The capital of France is", parseSpecial: true)
        var parameters = GenerationParameters()
        parameters.sampling = .greedy
        parameters.maxTokens = 5
        let short = try generator.generate(prompt: prompt, parameters: parameters)
        XCTAssertEqual(short.tokens.count, 5)
        XCTAssertEqual(short.finishReason, .length)
        XCTAssertEqual(short.tokens, [7042, 30, 198, 198, 504], "golden greedy continuation")

        parameters.maxTokens = 40
        parameters.stopStrings = ["United"]
        let stopped = try generator.generate(prompt: prompt, parameters: parameters)
        XCTAssertEqual(stopped.finishReason, .stop)
        XCTAssertEqual(stopped.text, " Paris.\n\nThe ")

        parameters.stopStrings = []
        parameters.sampling = SamplingParameters()
        parameters.sampling.seed = 7
        parameters.maxTokens = 12
        let a = try generator.generate(prompt: prompt, parameters: parameters)
        let b = try generator.generate(prompt: prompt, parameters: parameters)
        XCTAssertEqual(a.tokens, b.tokens)
    }

    func testBadRequestsAreClearErrors() throws {
        let generator = try makeGenerator(context: 16)
        var parameters = GenerationParameters()
        XCTAssertThrowsError(try generator.generate(prompt: [], parameters: parameters)) { XCTAssertEqual($0 as? GenerationError, .emptyPrompt) }
        XCTAssertThrowsError(try generator.generate(prompt: Array(repeating: 100, count: 20), parameters: parameters)) {
            XCTAssertEqual($0 as? GenerationError, .promptTooLong(promptTokens: 20, contextLength: 16))
        }
        parameters.maxTokens = 0
        XCTAssertThrowsError(try generator.generate(prompt: [100], parameters: parameters)) { XCTAssertEqual($0 as? GenerationError, .invalidMaxTokens(0)) }
        parameters.maxTokens = 100
        parameters.sampling = .greedy
        let full = try generator.generate(prompt: Array(repeating: 100, count: 10), parameters: parameters)
        XCTAssertEqual(full.finishReason, .length, "generation stops when the context is full")
        XCTAssertLessThanOrEqual(full.tokens.count, 7)
    }
}
