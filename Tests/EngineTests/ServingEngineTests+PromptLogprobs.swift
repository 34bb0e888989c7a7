@testable import Engine
import Foundation
import Models
import XCTest

extension ServingEngineTests {
    /// Runs one request on `core` to its end; returns the prompt scores it reported (once)
    /// and its outputs.
    func score(_ request: GenerationRequest, on core: EngineCore, id: UInt64 = 7) throws -> (scores: [TokenLogprobs], outputs: [GenerationOutput]) {
        try core.add(id: id, request)
        var scores: [[TokenLogprobs]] = [], outputs: [GenerationOutput] = []
        while core.hasWork {
            for e in try core.step() where e.request == id {
                if let s = e.output.promptLogprobs { scores.append(s) }
                outputs.append(e.output)
            }
        }
        XCTAssertEqual(scores.count, 1, "prompt scores come once, with the first output")
        return (scores.first ?? [], outputs)
    }

    /// Prompt log-probabilities, what evaluation harnesses score with: each prompt token's,
    /// given those before it, equal to teacher forcing through the plain forward pass,
    /// whether the prompt runs in one chunk or many, and even when the prefix cache holds the
    /// prompt (it is computed again: a cached block has no logits). `maxTokens` 0 scores
    /// only, for every sample.
    func testPromptLogprobsMatchTeacherForcingInEveryWayThePromptRuns() throws {
        let (model, tokenizer) = try load()
        let prompt = tokenizer.encode("Question: what is the capital of France?\nAnswer: the capital of France is Paris, a city on the Seine.", parseSpecial: true)
        XCTAssertGreaterThan(prompt.count, 20)
        let logits = try model.forward(prompt, cache: model.makeCache(capacity: prompt.count), logitRows: 0..<(prompt.count - 1))
        let v = model.vocabularySize
        let expected = (0..<(prompt.count - 1)).map { i in Evaluation.logSoftmax(logits[(i * v)..<((i + 1) * v)])[prompt[i + 1]] }

        var p = GenerationParameters()
        p.sampling = .greedy
        p.maxTokens = 3
        p.ignoreEndOfGeneration = true
        var request = GenerationRequest(prompt: prompt, parameters: p)
        request.promptLogprobs = 2
        func check(_ scores: [TokenLogprobs], _ what: String) {
            XCTAssertEqual(scores.map(\.chosen.token), Array(prompt.dropFirst()), what)
            for (got, want) in zip(scores.map(\.chosen.logprob), expected) { XCTAssertEqual(got, want, accuracy: 2e-3, what) }
            XCTAssertTrue(scores.allSatisfy { $0.top.count == 2 && $0.top[0].logprob >= $0.chosen.logprob }, what)
        }

        let whole = try score(request, on: try makeCore())
        check(whole.scores, "one chunk")
        XCTAssertEqual(whole.outputs.flatMap(\.tokens).count, 3, "then it generates as asked")

        let chunked = try score(request, on: try makeCore { $0.tokenBudget = 8 })
        check(chunked.scores, "chunks of 8")

        let core = try makeCore { $0.blockSize = 4 }
        var plain = request
        plain.promptLogprobs = nil
        _ = try run([plain], on: core)
        XCTAssertGreaterThan(core.currentStatistics().kvBlocksCached, 0)
        let cached = try score(request, on: core)
        check(cached.scores, "with the prompt in the prefix cache")
        XCTAssertEqual(cached.outputs.last?.metrics?.cachedPromptTokens, 0, "a scored prompt takes nothing from the cache")

        var only = request
        only.parameters.maxTokens = 0
        only.samples = 2
        let scoredOnly = try score(only, on: try makeCore())
        check(scoredOnly.scores, "max_tokens 0")
        XCTAssertEqual(scoredOnly.outputs.map(\.index).sorted(), [0, 1])
        XCTAssertTrue(scoredOnly.outputs.allSatisfy { $0.tokens.isEmpty && $0.text.isEmpty && $0.finishReason == .length })
        XCTAssertEqual(scoredOnly.outputs.last?.metrics?.completionTokens, 0)

        var unscored = only
        unscored.promptLogprobs = nil
        XCTAssertThrowsError(try makeCore().validate(unscored)) { XCTAssertEqual($0 as? GenerationError, .invalidMaxTokens(0)) }
    }
}
