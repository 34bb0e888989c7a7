import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
@testable import Router
import Server
import XCTest

/// A router pairing a prefill worker with a decode worker: the prompt is computed on the
/// first, its blocks travel into the second's cache, and the answer is the colocated one.
/// When the prefill worker is gone or refuses, the decode worker computes the prompt.
extension RouterTests {
    func completion(_ data: Data) -> (text: String?, cached: Int?) {
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        let text = (object?["choices"] as? [[String: Any]])?.first?["text"] as? String
        let cached = ((object?["usage"] as? [String: Any])?["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int
        return (text, cached)
    }

    func testPrefillOnOneWorkerDecodeOnAnother() async throws {
        let (prefill, prefillTask) = try await Self.replica(role: .prefill, kvIdentity: 7)
        let (decode, decodeTask) = try await Self.replica(role: .decode, kvIdentity: 7)
        let (colocated, colocatedTask) = try await Self.replica(kvIdentity: 7)
        defer { prefillTask.cancel(); decodeTask.cancel(); colocatedTask.cancel() }
        let (base, _, routerTask) = try await route(ReplicaSet(urls: [decode], policy: .cacheAware),
                                                    prefillWorkers: ReplicaSet(urls: [prefill], policy: .cacheAware))
        defer { routerTask.cancel() }

        let story = String(repeating: "The keeper climbed the stairs of the lighthouse and lit the lamp. ", count: 8)
        var request: [String: Any] = ["model": "smol", "prompt": story + "Then", "max_tokens": 12, "temperature": 0]
        let expected = completion(try await call(colocated, "/v1/completions", request).data)
        XCTAssertNotNil(expected.text)
        let routed = try await call(base, "/v1/completions", request)
        XCTAssertEqual(routed.status, 200, String(decoding: routed.data, as: UTF8.self))
        let answer = completion(routed.data)
        XCTAssertEqual(answer.text, expected.text, "greedy output as colocated")
        XCTAssertGreaterThanOrEqual(answer.cached ?? 0, 96, "the decode worker found the prompt's blocks in its cache")
        request["stream"] = true
        request["prompt"] = "Another prompt: " + story
        let streamed = try await call(base, "/v1/completions", request)
        XCTAssertTrue(streamedText(streamed.data).done)

        let metrics = String(decoding: try await call(base, "/metrics").data, as: UTF8.self)
        XCTAssertTrue(metrics.contains("apus_router_prefills_total{outcome=\"imported\"} 2"), metrics)
        let decodeMetrics = String(decoding: try await call(decode, "/metrics").data, as: UTF8.self)
        XCTAssertTrue(decodeMetrics.contains("apus_kv_blocks_imported "), decodeMetrics)

        // Each role refuses the other's half, and a body that is not blocks is refused.
        let exportOnDecode = try await call(decode, "/v1/completions", request, headers: [APIServer.kvExportHeader: "1"])
        XCTAssertEqual(exportOnDecode.status, 400)
        XCTAssertTrue(String(decoding: exportOnDecode.data, as: UTF8.self).contains("this worker runs --role decode, which does not export KV blocks"))
        let importOnPrefill = try await call(prefill, APIServer.kvImportPath, rawBody: Data("APKV".utf8))
        XCTAssertEqual(importOnPrefill.status, 403)
        XCTAssertTrue(String(decoding: importOnPrefill.data, as: UTF8.self).contains("this worker runs --role prefill, which does not import KV blocks"))
        let garbage = try await call(decode, APIServer.kvImportPath, rawBody: Data(String(repeating: "not blocks ", count: 8).utf8))
        XCTAssertEqual(garbage.status, 400)
        XCTAssertTrue(String(decoding: garbage.data, as: UTF8.self).contains("the stream does not start with APKV: it is not KV blocks"))
    }

    func testADecodeWorkerComputesThePromptWhenPrefillFails() async throws {
        let (decode, decodeTask) = try await Self.replica(role: .decode, kvIdentity: 7)
        // Another model's blocks, and a prefill worker that is not there.
        let (stranger, strangerTask) = try await Self.replica(role: .prefill, kvIdentity: 8)
        defer { decodeTask.cancel(); strangerTask.cancel() }
        let request: [String: Any] = ["model": "smol", "prompt": String(repeating: "A long prompt that fills blocks. ", count: 10), "max_tokens": 8, "temperature": 0]
        let expected = completion(try await call(decode, "/v1/completions", request).data).text
        XCTAssertNotNil(expected)
        for prefill in [stranger, "http://127.0.0.1:\(try closedPort())"] {
            let (base, router, routerTask) = try await route(ReplicaSet(urls: [decode], policy: .cacheAware),
                                                                prefillWorkers: ReplicaSet(urls: [prefill], policy: .cacheAware))
            defer { routerTask.cancel() }
            // Health checks would skip a dead worker; this one is tried and fails.
            router.prefillWorkers!.update(prefill, healthy: true, gauges: [:])
            let routed = try await call(base, "/v1/completions", request)
            XCTAssertEqual(routed.status, 200, String(decoding: routed.data, as: UTF8.self))
            XCTAssertEqual(completion(routed.data).text, expected, prefill)
            let metrics = String(decoding: try await call(base, "/metrics").data, as: UTF8.self)
            let outcome = prefill == stranger ? "refused" : "prefill_failed"
            XCTAssertTrue(metrics.contains("apus_router_prefills_total{outcome=\"\(outcome)\"} 1"), metrics)
        }
    }
}
