@testable import Engine
import XCTest

/// The policy drafts what pays on the measured cost of a pass: freely where a pass costs the
/// same whatever its tokens (memory-bound), sparingly where each token costs its share.
final class SpeculationPolicyTests: XCTestCase {
    let flat = SpeculationPolicy(maxDraft: 16, calibration: [(1, 0.04), (17, 0.04)])
    let linear = SpeculationPolicy(maxDraft: 16, calibration: [(1, 0.04), (17, 0.68)])

    func testDraftLengthFollowsTheCostOfAPass() {
        XCTAssertEqual(flat.draftLength(acceptance: 0.8, limit: 8, stepTokens: 1, stepOutput: 1), 8)
        XCTAssertEqual(linear.draftLength(acceptance: 0.5, limit: 8, stepTokens: 1, stepOutput: 1), 0)
    }

    func testABranchIsDraftedWhereItPays() {
        let α = 0.8, chainOutput = SpeculationPolicy.expectedTokens(draft: 8, acceptance: α)
        // Free tokens: the whole branch, where the chain is wrong one time in five.
        XCTAssertEqual(flat.branchLength(after: 0, chain: 8, available: 8, acceptance: α, branchAcceptance: 0.5, stepTokens: 9, stepOutput: chainOutput), 8)
        // Each token costs its share: a branch that is rarely reached does not pay...
        let sure = SpeculationPolicy.expectedTokens(draft: 8, acceptance: 0.95)
        XCTAssertEqual(linear.branchLength(after: 0, chain: 8, available: 8, acceptance: 0.95, branchAcceptance: 0.5, stepTokens: 9, stepOutput: sure), 0)
        // ...nor one whose first tokens are never right.
        XCTAssertEqual(flat.branchLength(after: 0, chain: 8, available: 8, acceptance: α, branchAcceptance: 0, stepTokens: 9, stepOutput: chainOutput), 0)
        // Past the chain's end the walk needs no wrong chain token to take the branch.
        XCTAssertEqual(flat.branchLength(after: 2, chain: 2, available: 4, acceptance: α, branchAcceptance: 0.5, stepTokens: 3,
                                         stepOutput: SpeculationPolicy.expectedTokens(draft: 2, acceptance: α)), 4)
    }
}
