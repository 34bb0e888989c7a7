@testable import Engine
import XCTest

final class SamplerTests: XCTestCase {
    let logits: [Float] = [1.0, 3.0, 2.5, -1.0, 0.0, 2.9]

    func testTopKEqualsTheHeadOfAFullSort() {
        var seed: UInt64 = 3
        for count in [1, 7, 1000] {
            // Few distinct values, so ties are common and their order (lower index first) matters.
            let values: [Float] = (0..<count).map { _ in
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return Float((seed >> 33) % 13) - 6
            }
            let sorted = values.indices.sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }
            for k in [1, 5, 40, count, count + 3] {
                XCTAssertEqual(TopK.indices(of: values, k: k), Array(sorted.prefix(k)), "count \(count) k \(k)")
            }
        }
    }

    func testGreedyPicksTheMaximum() throws {
        var sampler = try Sampler(.greedy)
        XCTAssertEqual(sampler.sample(logits, history: []).token, 1)
    }

    func testSeedMakesSamplingReproducible() throws {
        var p = SamplingParameters()
        p.temperature = 1.5
        p.topK = 0
        p.topP = 1
        p.minP = 0
        p.seed = 42
        var a = try Sampler(p), b = try Sampler(p)
        let first = (0..<200).map { _ in a.sample(logits, history: []).token }
        XCTAssertEqual(first, (0..<200).map { _ in b.sample(logits, history: []).token })
        XCTAssertGreaterThan(Set(first).count, 3, "a high temperature spreads the choices")
        p.seed = 43
        var c = try Sampler(p)
        XCTAssertNotEqual(first, (0..<200).map { _ in c.sample(logits, history: []).token })
    }

    func testTopKTopPAndMinPRestrictTheChoices() throws {
        var p = SamplingParameters()
        p.temperature = 5
        p.seed = 1
        p.topP = 1
        p.minP = 0
        p.topK = 2
        var s = try Sampler(p)
        XCTAssertEqual(Set((0..<300).map { _ in s.sample(logits, history: []).token }), [1, 5])
        p.topK = 0
        p.topP = 0.5  // token 1 alone has ~38%, with token 5 ~72%
        s = try Sampler(p)
        XCTAssertEqual(Set((0..<300).map { _ in s.sample(logits, history: []).token }), [1, 5])
        p.topP = 1
        p.minP = 0.5  // keeps tokens with probability at least half of the top one's
        s = try Sampler(p)
        XCTAssertEqual(Set((0..<300).map { _ in s.sample(logits, history: []).token }), [1, 2, 5])
    }

    /// Without filters (OpenAI's defaults) the draw covers the whole vocabulary without
    /// sorting it; frequencies follow softmax(logits / temperature).
    func testUnfilteredDrawsFollowTheDistribution() throws {
        var p = SamplingParameters()
        p.temperature = 0.7
        p.topK = 0
        p.topP = 1
        p.minP = 0
        p.seed = 3
        var s = try Sampler(p)
        let draws = 40_000
        var counts = [Int](repeating: 0, count: logits.count)
        for _ in 0..<draws { counts[s.sample(logits, history: []).token] += 1 }
        let weights = logits.map { exp(Double($0) / 0.7) }
        let z = weights.reduce(0, +)
        for (i, w) in weights.enumerated() {
            let expected = w / z * Double(draws)
            // Five standard deviations of a binomial count.
            XCTAssertEqual(Double(counts[i]), expected, accuracy: 5 * expected.squareRoot() + 1, "token \(i)")
        }
    }

    /// Top-p without top-k on a vocabulary-sized distribution: only the nucleus a full sort
    /// gives is ever drawn, and its members are.
    func testTopPWithoutTopKMatchesTheFullSortNucleus() throws {
        var g = SplitMix64(seed: 5)
        let big = (0..<49_152).map { _ in Float(Double(g.next() >> 11) / Double(1 << 53)) * 12 - 6 }
        var p = SamplingParameters()
        p.temperature = 1
        p.topK = 0
        p.topP = 0.3
        p.minP = 0
        p.seed = 9
        let order = big.indices.sorted { big[$0] != big[$1] ? big[$0] > big[$1] : $0 < $1 }
        let weights = order.map { exp(Double(big[$0] - big[order[0]])) }
        let z = weights.reduce(0, +)
        var cumulative = 0.0
        var nucleus = Set<Int>()
        for (i, id) in order.enumerated() {
            nucleus.insert(id)
            cumulative += weights[i] / z
            if cumulative >= 0.3 { break }
        }
        var s = try Sampler(p)
        let drawn = Set((0..<3000).map { _ in s.sample(big, history: []).token })
        XCTAssertTrue(drawn.isSubset(of: nucleus), "drew outside the nucleus")
        XCTAssertGreaterThan(drawn.count, nucleus.count / 2, "covers the nucleus (\(drawn.count) of \(nucleus.count))")
    }

    func testLogitBiasBansAndForcesTokens() throws {
        var p = SamplingParameters.greedy
        p.logitBias = [1: -100]
        var s = try Sampler(p)
        XCTAssertEqual(s.sample(logits, history: []).token, 5, "the best token banned, the next one wins")
        p.logitBias = [3: 100]
        s = try Sampler(p)
        XCTAssertEqual(s.sample(logits, history: []).token, 3)
        p.logitBias = [3: 101]
        XCTAssertThrowsError(try Sampler(p)) {
            XCTAssertEqual($0 as? SamplingError, .invalidParameter(name: "logit_bias", message: "biases must be between -100 and 100, got 101.0 for token 3"))
        }
    }

    func testPenalties() throws {
        var p = SamplingParameters.greedy
        p.repetitionPenalty = 2
        var s = try Sampler(p)
        XCTAssertEqual(s.sample(logits, history: [1]).token, 5, "3.0 / 2 falls below 2.9")
        p = .greedy
        p.presencePenalty = 0.6
        s = try Sampler(p)
        XCTAssertEqual(s.sample(logits, history: [1, 5]).token, 2, "3.0 and 2.9 both lose 0.6, below 2.5")
        p = .greedy
        p.frequencyPenalty = 0.5
        s = try Sampler(p)
        XCTAssertEqual(s.sample(logits, history: [1, 1, 5]).token, 2, "1 loses 1.0, 5 loses 0.5")
        XCTAssertEqual(s.sample(logits, history: [1, 1]).token, 5, "1 loses 1.0; 5 keeps 2.9")
    }

    func testAbsurdParametersAreRejectedByName() {
        func rejects(_ change: (inout SamplingParameters) -> Void, _ name: String) {
            var p = SamplingParameters()
            change(&p)
            XCTAssertThrowsError(try Sampler(p)) {
                guard case .invalidParameter(let n, _)? = $0 as? SamplingError else { return XCTFail("\($0)") }
                XCTAssertEqual(n, name)
            }
        }
        rejects({ $0.temperature = -1 }, "temperature")
        rejects({ $0.temperature = .nan }, "temperature")
        rejects({ $0.topP = 0 }, "top_p")
        rejects({ $0.topP = 1.5 }, "top_p")
        rejects({ $0.topK = -3 }, "top_k")
        rejects({ $0.minP = 2 }, "min_p")
        rejects({ $0.repetitionPenalty = 0 }, "repetition_penalty")
        rejects({ $0.presencePenalty = 3 }, "presence_penalty")
        rejects({ $0.frequencyPenalty = -2.5 }, "frequency_penalty")
    }

    func testStopStringsHoldBackPartialMatches() {
        var m = StopStringMatcher(["STOP", "\n\n"])
        XCTAssertEqual(m.append("Hello ST").emit, "Hello ")
        XCTAssertEqual(m.append("ORY").emit, "STORY")
        let r = m.append(" and then STO")
        XCTAssertEqual(r.emit, " and then ")
        XCTAssertFalse(r.stopped)
        let end = m.append("P here")
        XCTAssertEqual(end.emit, "")
        XCTAssertTrue(end.stopped)
        var n = StopStringMatcher(["\n\n"])
        XCTAssertEqual(n.append("a\n").emit, "a")
        XCTAssertEqual(n.flush(), "\n")
    }
}
