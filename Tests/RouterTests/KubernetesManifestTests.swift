import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import TestSupport
import XCTest

/// deploy/kubernetes/ validated offline (kubernetes_test.py), the replicated topology and the
/// disaggregated one: the Kubernetes schemas, and Apus's own flags, roles, probes and metrics
/// as a live replica exports them.
final class KubernetesManifestTests: XCTestCase {
    func testManifestsValidateAgainstKubernetesAndApus() async throws {
        if try shell(["python3", "-c", "import kubernetes_validate, yaml"]).status != 0 {
            let (status, output) = try shell(["python3", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "kubernetes-validate==1.37.0", "PyYAML"])
            XCTAssertEqual(status, 0, "installing kubernetes-validate failed:\n\(output)")
        }
        let (url, task) = try await RouterTests.replica()
        defer { task.cancel() }
        let (data, _) = try await URLSession.shared.data(from: URL(string: url + "/metrics")!)
        let metrics = FileManager.default.temporaryDirectory.appendingPathComponent("apus-replica-metrics-\(getpid()).txt")
        try data.write(to: metrics)
        defer { try? FileManager.default.removeItem(at: metrics) }
        let root = TestSupport.packageRoot
        let apus = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("apus").path
        let (status, text) = try shell(["python3", root.appendingPathComponent("Tests/RouterTests/kubernetes_test.py").path,
                                        "--manifests", root.appendingPathComponent("deploy/kubernetes").path,
                                        "--manifests", root.appendingPathComponent("deploy/kubernetes/disaggregated").path, "--apus", apus, "--metrics", metrics.path])
        print(text, terminator: "")
        XCTAssertEqual(status, 0, "kubernetes_test.py failed:\n\(text)")
    }
}
