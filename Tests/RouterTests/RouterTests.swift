import Engine
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Models
@testable import Router
import Server
import TestSupport
import Tokenizer
import XCTest

/// `apus router` in front of live replicas (SmolLM2 in this process): answers pass through
/// byte for byte, a replica that is down is skipped after its first failure, health and
/// metrics say so.
final class RouterTests: XCTestCase {
    /// A live API server on SmolLM2; returns its base URL and the task that runs it.
    static func replica(role: WorkerRole = .both, kvIdentity: UInt64 = 0) async throws -> (url: String, task: Task<Void, Error>) {
        let file = try TestSupport.model()
        let tokenizer = try Tokenizer(file: file)
        var configuration = EngineConfiguration()
        configuration.contextLength = 512
        configuration.kvCacheBytes = 8 << 20
        let engine = try Engine(model: try ModelRegistry.load(file), tokenizer: tokenizer, configuration: configuration)
        var serverConfiguration = ServerConfiguration()
        serverConfiguration.role = role
        let server = APIServer(configuration: serverConfiguration)
        server.ready(ServedModel(engine: engine, tokenizer: tokenizer, chatTemplate: try ChatTemplate(metadata: file.metadata), name: "smol", kvIdentity: kvIdentity))
        let (ports, sink) = AsyncStream<Int>.makeStream()
        let app = server.application(port: 0, onServerRunning: { sink.yield($0.localAddress?.port ?? 0) })
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        return ("http://127.0.0.1:\(await iterator.next() ?? 0)", task)
    }

    func route(_ replicas: ReplicaSet, prefillWorkers: ReplicaSet? = nil) async throws -> (url: String, router: Router, task: Task<Void, Error>) {
        let router = Router(replicas: replicas, prefillWorkers: prefillWorkers)
        await router.checkReplicas()
        let (ports, sink) = AsyncStream<Int>.makeStream()
        let app = router.application(port: 0, onServerRunning: { sink.yield($0.localAddress?.port ?? 0) })
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        return ("http://127.0.0.1:\(await iterator.next() ?? 0)", router, task)
    }

    func call(_ base: String, _ path: String, _ body: [String: Any]? = nil, headers: [String: String] = [:], rawBody: Data? = nil) async throws -> (status: Int, data: Data, contentType: String?) {
        var request = URLRequest(url: URL(string: base + path)!)
        if let body {
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
        }
        if let rawBody {
            request.httpMethod = "POST"
            request.httpBody = rawBody
        }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        return (http.statusCode, data, http.value(forHTTPHeaderField: "Content-Type"))
    }

    /// The text deltas of an SSE completion stream, and whether it ended with [DONE].
    func streamedText(_ data: Data) -> (text: String, done: Bool) {
        var text = "", done = false
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix("data: ") {
            let payload = line.dropFirst(6)
            if payload == "[DONE]" { done = true; continue }
            let object = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any]
            text += ((object?["choices"] as? [[String: Any]])?.first?["text"] as? String) ?? ""
        }
        return (text, done)
    }

    func testPassesRequestsThroughAndSkipsADeadReplica() async throws {
        let (live, replicaTask) = try await Self.replica()
        defer { replicaTask.cancel() }
        // A port nothing listens on: bound, then closed.
        let dead = "http://127.0.0.1:\(try closedPort())"
        let (base, router, routerTask) = try await route(ReplicaSet(urls: [live, dead], policy: .roundRobin))
        defer { routerTask.cancel() }
        XCTAssertEqual(router.replicas.statuses.map(\.healthy), [true, false], "the first health check finds the dead one")

        let health = try await call(base, "/health")
        XCTAssertEqual(health.status, 200)
        XCTAssertEqual(try JSONSerialization.jsonObject(with: health.data) as? NSDictionary, ["status": "ok", "healthy_replicas": 1])

        // Byte for byte: the same answer through the router as from the replica.
        let tokenize: [String: Any] = ["model": "smol", "prompt": "The capital of France is"]
        let direct = try await call(live, "/tokenize", tokenize)
        let routed = try await call(base, "/tokenize", tokenize)
        XCTAssertEqual(routed.status, 200)
        XCTAssertEqual(routed.data, direct.data)
        XCTAssertEqual(routed.contentType, direct.contentType)

        // Generation, plain and streamed, gives the replica's greedy text.
        let completion: [String: Any] = ["model": "smol", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0]
        let plain = try await call(live, "/v1/completions", completion)
        let expected = ((try JSONSerialization.jsonObject(with: plain.data) as? [String: Any])?["choices"] as? [[String: Any]])?.first?["text"] as? String
        XCTAssertNotNil(expected)
        var streamed = completion
        streamed["stream"] = true
        let stream = try await call(base, "/v1/completions", streamed)
        XCTAssertEqual(stream.status, 200)
        XCTAssertEqual(stream.contentType, "text/event-stream")
        XCTAssertEqual(streamedText(stream.data).text, expected)
        XCTAssertTrue(streamedText(stream.data).done)

        // Marked healthy again by hand, the dead replica is tried once, fails before any
        // byte, and the request is served by the live one.
        router.replicas.update(dead, healthy: true, gauges: [:])
        for _ in 0..<2 {
            let again = try await call(base, "/v1/completions", completion)
            XCTAssertEqual(again.status, 200, String(decoding: again.data, as: UTF8.self))
        }
        XCTAssertEqual(router.replicas.statuses.map(\.healthy), [true, false])
        XCTAssertEqual(router.replicas.statuses.map(\.inFlight), [0, 0])

        let metrics = String(decoding: try await call(base, "/metrics").data, as: UTF8.self)
        XCTAssertTrue(metrics.contains("apus_router_retries_total 1"), metrics)
        XCTAssertTrue(metrics.contains("apus_router_replica_healthy{replica=\"\(dead)\"} 0"), metrics)
        XCTAssertTrue(metrics.contains("apus_router_requests_total{replica=\"\(live)\",status=\"200\"} 4"), metrics)

        // No replica left: a clear 503.
        router.replicas.markFailed(live)
        let none = try await call(base, "/v1/completions", completion)
        XCTAssertEqual(none.status, 503)
        XCTAssertTrue(String(decoding: none.data, as: UTF8.self).contains("no replica could take the request"))
    }

    /// A port that was free a moment ago.
    func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
