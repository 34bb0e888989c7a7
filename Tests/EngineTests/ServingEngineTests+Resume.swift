@testable import Engine
import XCTest

/// A generation resumed from tokens a lost worker generated goes on exactly where it was:
/// the same remaining tokens and text, stop strings and limits counted across the break.
extension ServingEngineTests {
    func testAResumedGenerationGoesOnWhereItStopped() throws {
        for (n, var request) in try goldenRequests(maxTokens: 24).prefix(3).enumerated() {
            request.parameters.ignoreEndOfGeneration = true
            let whole = try run([request], on: try makeCore())[0]
            for cut in [1, 7, 23] {
                var resumed = request
                resumed.resumedTokens = Array(whole.tokens[0].prefix(cut))
                let rest = try run([resumed], on: try makeCore())[0]
                XCTAssertEqual(rest.tokens[0], Array(whole.tokens[0].dropFirst(cut)), "prompt \(n), resumed after \(cut)")
                XCTAssertTrue(whole.texts[0].hasSuffix(rest.texts[0]), "prompt \(n), resumed after \(cut): \(rest.texts[0].debugDescription)")
                XCTAssertEqual(rest.reasons[0], .length)
                XCTAssertEqual(rest.metrics?.completionTokens, 24, "the resumed tokens count as generated")
                XCTAssertEqual(rest.metrics?.promptTokens, request.prompt.count)
            }
        }
    }

    func testResumingIsRefusedWhereItCannotContinueOneGeneration() throws {
        let core = try makeCore()
        var r = try goldenRequests(maxTokens: 4)[0]
        r.resumedTokens = [1, 2, 3, 4]
        XCTAssertThrowsError(try core.validate(r)) {
            XCTAssertEqual($0 as? EngineError, .invalidResume("resume_token_ids holds 4 tokens, not fewer than max_tokens (4): nothing is left to generate"))
        }
        r.resumedTokens = [1]
        r.samples = 2
        XCTAssertThrowsError(try core.validate(r)) { XCTAssertEqual(($0 as? EngineError).map { "\($0)" }, "resume_token_ids continues one sample: n must be 1, with no prompt log-probabilities") }
        r.samples = 1
        r.resumedTokens = [1 << 30]
        XCTAssertThrowsError(try core.validate(r))
    }
}
