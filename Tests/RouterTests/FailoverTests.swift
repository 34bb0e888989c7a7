import Foundation
import TestSupport
import XCTest

/// A replica killed mid-stream behind `apus router` (failover_test.py, real processes):
/// every stream completes with the text it has without the kill. As root (CI), each replica
/// is in a network namespace of its own, reached over a veth link.
final class FailoverTests: XCTestCase {
    func testAReplicaKilledMidStreamLosesNoToken() throws {
        let apus = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("apus").path
        guard FileManager.default.isExecutableFile(atPath: apus) else { return XCTFail("no apus executable beside the tests at \(apus)") }
        _ = try TestSupport.model(.smolLM2)
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/RouterTests/failover_test.py").path
        let netns = getuid() == 0 ? ["--netns"] : []
        let (status, text) = try shell(["python3", script, "--apus", apus, "--model", TestSupport.modelPath, "--requests", "16"] + netns)
        print(text, terminator: "")
        XCTAssertEqual(status, 0, "failover_test.py failed:\n\(text)")
    }
}
