@testable import Engine
import XCTest

/// The policy drafts what pays on the measured cost of a pass: freely where a pass costs the
/// same whatever its tokens (memory-bound), sparingly where each token costs its share.
final class SpeculationPolicyTests: XCTestCase {
    let flat = SpeculationPolicy(maxDraft: 16, calibration: [(1, 0.04), (17, 0.04)])
    let linear = SpeculationPolicy(maxDraft: 16, calibration: [(1, 0.04), (17, 0.68)])

    /// One decoding sequence's own token at the start of a context.
    let single = StepPlan(tokens: 1, attended: 1, output: 1)

    func testDraftLengthFollowsTheCostOfAPass() {
        XCTAssertEqual(flat.draftLength(acceptance: 0.8, limit: 8, context: 1, step: single), 8)
        XCTAssertEqual(linear.draftLength(acceptance: 0.5, limit: 8, context: 1, step: single), 0)
    }

    /// Qwen2.5-Coder-1.5B on this machine's two AVX2 cores: the passes as calibrated, and
    /// attention at the cost that makes sixteen sequences 700 tokens in take 0.36 s a step,
    /// a third more than the pass, as they did.
    func testAttentionAtLongContextsStopsABusyBatchFromDrafting() {
        let passes: [(tokens: Int, seconds: Double)] = [(1, 0.035), (2, 0.070), (4, 0.100), (8, 0.167), (16, 0.247), (17, 0.256), (32, 0.480)]
        let attention = (0.36 - 0.247) / Double(16 * 700)
        let policy = SpeculationPolicy(maxDraft: 16, calibration: passes, secondsPerAttendedPosition: attention)
        var batch = StepPlan()
        for _ in 0..<16 { batch.add(tokens: 1, from: 699) }
        batch.output = 16
        XCTAssertEqual(policy.cost(batch), 0.247 + attention * Double(16 * 700), accuracy: 1e-12)
        XCTAssertEqual(policy.draftLength(acceptance: 0.97, limit: 16, context: 700, step: batch), 0)
        // Without attention's cost the seventeenth token looks nearly free.
        let passesOnly = SpeculationPolicy(maxDraft: 16, calibration: passes)
        XCTAssertGreaterThan(passesOnly.draftLength(acceptance: 0.97, limit: 16, context: 700, step: batch), 0)
        // One sequence alone still drafts: its pass is bound by reading the weights.
        var alone = StepPlan()
        alone.add(tokens: 1, from: 699)
        alone.output = 1
        XCTAssertGreaterThanOrEqual(policy.draftLength(acceptance: 0.97, limit: 16, context: 700, step: alone), 4)
    }

    /// A calibration in which more tokens took less time (this machine slowed down while
    /// measuring the fewer) is read as the faster measurement for both.
    func testASlowerMeasurementOfFewerTokensGivesWay() {
        let policy = SpeculationPolicy(maxDraft: 16, calibration: [(1, 0.04), (2, 0.07), (4, 0.10), (16, 0.44), (17, 0.37), (32, 0.62)])
        var sixteen = StepPlan(), seventeen = StepPlan()
        sixteen.add(tokens: 16, from: 0)
        seventeen.add(tokens: 17, from: 0)
        XCTAssertEqual(policy.cost(sixteen), 0.37, accuracy: 1e-12)
        XCTAssertEqual(policy.cost(seventeen), 0.37, accuracy: 1e-12)
        // Between the points, straight lines through the corrected ones: 8 tokens on the way from 4 to 16.
        var eight = StepPlan()
        eight.add(tokens: 8, from: 0)
        XCTAssertEqual(policy.cost(eight), 0.10 + (0.37 - 0.10) * 4 / 12, accuracy: 1e-12)
    }

    func testABranchIsDraftedWhereItPays() {
        let α = 0.8, chainOutput = SpeculationPolicy.expectedTokens(draft: 8, acceptance: α)
        var chain = StepPlan(output: chainOutput)
        chain.add(tokens: 9, from: 0)
        // Free tokens: the whole branch, where the chain is wrong one time in five.
        XCTAssertEqual(flat.branchLength(after: 0, chain: 8, available: 8, acceptance: α, branchAcceptance: 0.5, context: 1, step: chain), 8)
        // Each token costs its share: a branch that is rarely reached does not pay...
        var sure = chain
        sure.output = SpeculationPolicy.expectedTokens(draft: 8, acceptance: 0.95)
        XCTAssertEqual(linear.branchLength(after: 0, chain: 8, available: 8, acceptance: 0.95, branchAcceptance: 0.5, context: 1, step: sure), 0)
        // ...nor one whose first tokens are never right.
        XCTAssertEqual(flat.branchLength(after: 0, chain: 8, available: 8, acceptance: α, branchAcceptance: 0, context: 1, step: chain), 0)
        // Past the chain's end the walk needs no wrong chain token to take the branch.
        var short = StepPlan(output: SpeculationPolicy.expectedTokens(draft: 2, acceptance: α))
        short.add(tokens: 3, from: 0)
        XCTAssertEqual(flat.branchLength(after: 2, chain: 2, available: 4, acceptance: α, branchAcceptance: 0.5, context: 1, step: short), 4)
    }

    /// The estimate starts at its prior (0.8), climbs past where a prior that stayed would
    /// cap it (0.96) while every drafted token is kept, drops at a rejection, and drifts back
    /// toward the prior through steps without a draft.
    func testAcceptanceFollowsTheDraftsPastThePrior() {
        var estimate = AcceptanceEstimate()
        XCTAssertEqual(estimate.rate, 0.8, accuracy: 1e-12)
        for _ in 0..<10 { estimate.observe(drafted: 8, accepted: 8) }
        XCTAssertGreaterThan(estimate.rate, 0.99)
        let copying = estimate.rate
        estimate.observe(drafted: 8, accepted: 3)
        XCTAssertLessThan(estimate.rate, copying - 0.02)
        XCTAssertGreaterThan(estimate.rate, 0.9, "one rejection after many kept tokens")
        for _ in 0..<200 { estimate.relax() }
        XCTAssertEqual(estimate.rate, 0.8, accuracy: 1e-6)
        var failing = AcceptanceEstimate()
        for _ in 0..<10 { failing.observe(drafted: 4, accepted: 0) }
        XCTAssertLessThan(failing.rate, 0.1)
    }
}
