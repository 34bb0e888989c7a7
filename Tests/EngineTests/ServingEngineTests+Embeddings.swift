@testable import Engine
import Foundation
import Models
import XCTest

extension ServingEngineTests {
    /// Runs one embedding request on `core` (beside `others`, which generate) to its end;
    /// returns the vector it reported and how many outputs carried one.
    func embed(_ request: GenerationRequest, on core: EngineCore, besides others: [GenerationRequest] = []) throws -> [Float] {
        for (i, r) in others.enumerated() { try core.add(id: 100 + UInt64(i), r) }
        try core.add(id: 7, request)
        var vectors: [[Float]] = []
        while core.hasWork {
            for e in try core.step() where e.request == 7 {
                XCTAssertNil(e.error)
                if let v = e.output.embedding { vectors.append(v) }
                XCTAssertTrue(e.output.tokens.isEmpty, "an embedding request generates nothing")
            }
        }
        XCTAssertEqual(vectors.count, 1, "the embedding comes once")
        return vectors.first ?? []
    }

    /// Embeddings pool the final hidden states (after the output norm) as the plain forward
    /// computes them: the mean, the first or the last row; bitwise the same in one chunk or
    /// many, beside other requests, and with the prompt in the prefix cache (computed again).
    func testEmbeddingsPoolTheFinalHiddenStatesInEveryWayThePromptRuns() throws {
        let (model, tokenizer) = try load()
        let prompt = tokenizer.encode("Embeddings turn a text into one vector; similar texts get similar vectors.", parseSpecial: true)
        XCTAssertGreaterThan(prompt.count, 12)
        var batch = ForwardBatch()
        let blocks = (prompt.count + 15) / 16
        batch.append(prompt, firstPosition: 0, blockTable: (0..<Int32(blocks)).map { $0 }, logitsOfLast: 0)
        batch.hiddenRows = Array(0..<prompt.count)
        let hidden = try model.forward(batch, cache: model.makePagedCache(blockSize: 16, blockCount: blocks))
        let w = model.hiddenWidth
        XCTAssertEqual(hidden.count, prompt.count * w)
        func row(_ t: Int) -> [Float] { Array(hidden[(t * w)..<((t + 1) * w)]) }
        let mean = (0..<w).map { i in Float((0..<prompt.count).reduce(0.0) { $0 + Double(hidden[$1 * w + i]) } / Double(prompt.count)) }

        var request = GenerationRequest(prompt: prompt, parameters: GenerationParameters())
        request.parameters.maxTokens = 0
        request.pooling = .mean
        let whole = try embed(request, on: try makeCore())
        XCTAssertEqual(whole, mean, "mean pooling")
        XCTAssertEqual(try embed(request, on: try makeCore { $0.tokenBudget = 5 }), whole, "chunks of 5")

        var other = GenerationRequest(prompt: tokenizer.encode("Once upon a time", parseSpecial: true), parameters: GenerationParameters())
        other.parameters.sampling = .greedy
        other.parameters.maxTokens = 6
        XCTAssertEqual(try embed(request, on: try makeCore { $0.tokenBudget = 7 }, besides: [other]), whole, "beside a generating request")

        let core = try makeCore { $0.blockSize = 4 }
        var plain = GenerationRequest(prompt: prompt, parameters: GenerationParameters())
        plain.parameters.maxTokens = 1
        _ = try run([plain], on: core)
        XCTAssertGreaterThan(core.currentStatistics().kvBlocksCached, 0)
        XCTAssertEqual(try embed(request, on: core), whole, "with the prompt in the prefix cache")

        request.pooling = .cls
        XCTAssertEqual(try embed(request, on: try makeCore { $0.tokenBudget = 5 }), row(0), "cls pooling")
        request.pooling = .last
        XCTAssertEqual(try embed(request, on: try makeCore { $0.tokenBudget = 5 }), row(prompt.count - 1), "last pooling")

        // An embedding request generates nothing, once.
        for change in [{ (r: inout GenerationRequest) in r.parameters.maxTokens = 1 }, { $0.samples = 2 }, { $0.logprobs = 0 }] {
            var bad = request
            change(&bad)
            XCTAssertThrowsError(try makeCore().validate(bad)) { XCTAssertEqual($0 as? EngineError, .invalidEmbeddingRequest) }
        }
    }
}
