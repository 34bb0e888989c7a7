import Foundation
import TestSupport
import XCTest

/// Adversarial clients against live `apus serve` processes (`hardening_test.py` beside this
/// file starts them with the flags each check needs, descriptor limits and signals included):
/// large prompts, deadlines, slowloris, per-client limits, descriptor exhaustion, mid-body
/// departures, malformed HTTP, HTTP/1.0, `Expect: 100-continue`, oversized headers, drains,
/// clients that stop reading, and the smaller validation rules.
final class ServerHardeningTests: XCTestCase {
    func testEveryAdversarialClientGetsTheFixedBehaviour() throws {
        // `swift test` builds the executable beside the test bundle.
        let apus = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("apus").path
        guard FileManager.default.isExecutableFile(atPath: apus) else { return XCTFail("no apus executable beside the tests at \(apus)") }
        _ = try TestSupport.model(.smolLM2)
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/ServerTests/hardening_test.py").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, "--apus", apus, "--model", TestSupport.modelPath, "--suite", "checks"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print(text, terminator: "")
        XCTAssertEqual(process.terminationStatus, 0, "hardening_test.py failed:\n\(text)")
    }
}
