@testable import Router
import XCTest

/// The routing policies on a replica set with no network: which replica each request gets.
final class ReplicaSetTests: XCTestCase {
    let urls = ["http://a", "http://b"]

    /// Four system prompts, each with its own question: the routing key of a chat request.
    func key(prompt p: Int, question q: Int) -> [UInt8] {
        let body: [String: Any] = ["model": "m", "messages": [
            ["role": "system", "content": "System prompt \(p). " + String(repeating: "Answer briefly and cite the documents. ", count: 30)],
            ["role": "user", "content": "Question \(q)?"],
        ]]
        return RoutingKey.of(path: "/v1/chat/completions", body: try! JSONSerialization.data(withJSONObject: body))
    }

    func testCacheAwareKeepsEachPrefixOnOneReplicaAndSpreadsThePrefixes() {
        let set = ReplicaSet(urls: urls, policy: .cacheAware)
        var placed: [Int: Set<Int>] = [:]
        for q in 0..<5 {
            for p in 0..<4 {
                let r = set.choose(key: key(prompt: p, question: q))!
                placed[p, default: []].insert(r)
                set.finished(r)
            }
        }
        XCTAssertEqual(placed.values.map(\.count), [1, 1, 1, 1], "\(placed)")
        XCTAssertEqual(Set(placed.values.map { $0.first! }), [0, 1], "the prefixes are spread: \(placed)")
        XCTAssertGreaterThan(set.predictedHitRatio, 0.75)
    }

    func testRoundRobinAlternatesAndLeastLoadedTakesTheIdleReplica() {
        let rr = ReplicaSet(urls: urls, policy: .roundRobin)
        XCTAssertEqual((0..<4).map { _ in rr.choose(key: key(prompt: 0, question: 0))! }, [0, 1, 0, 1])

        let ll = ReplicaSet(urls: urls, policy: .leastLoaded)
        XCTAssertEqual(ll.choose(key: []), 0)
        XCTAssertEqual(ll.choose(key: []), 1)
        XCTAssertEqual(ll.choose(key: []), 0)
        ll.finished(1)
        XCTAssertEqual(ll.choose(key: []), 1)
    }

    func testUnbalancedLoadOverridesTheCache() {
        var balance = BalanceSettings()
        balance.absoluteThreshold = 4
        let set = ReplicaSet(urls: urls, policy: .cacheAware, balance: balance)
        let first = set.choose(key: key(prompt: 0, question: 0))!
        // Its replica gets busy with the same prefix (each still in flight)...
        for q in 1...4 { XCTAssertEqual(set.choose(key: key(prompt: 0, question: q)), first) }
        // ...until it has more than 4 more in flight than the other, which takes the next.
        XCTAssertEqual(set.choose(key: key(prompt: 0, question: 5)), 1 - first)
    }

    func testFailedAndUnhealthyReplicasAreSkipped() {
        let set = ReplicaSet(urls: urls, policy: .roundRobin)
        set.markFailed(0)
        XCTAssertEqual(set.choose(key: []), 1)
        XCTAssertEqual(set.choose(key: []), 1)
        XCTAssertNil(set.choose(key: [], excluding: [1]))
        set.update(0, healthy: true, gauges: ["apus_num_requests_waiting": 3])
        XCTAssertEqual(set.statuses[0].waiting, 3)
        XCTAssertEqual(set.choose(key: [], excluding: [1]), 0)
    }

    /// The replicas' own counters give the observed hit rate since the router started; a
    /// replica whose counters fall has restarted, and its index empties.
    func testObservedHitRatioAndRestarts() {
        let set = ReplicaSet(urls: urls, policy: .cacheAware)
        set.update(0, healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 1000, "apus_prefix_cache_hit_tokens": 100])
        set.update(1, healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 0, "apus_prefix_cache_hit_tokens": 0])
        set.update(0, healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 2000, "apus_prefix_cache_hit_tokens": 900])
        set.update(1, healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 1000, "apus_prefix_cache_hit_tokens": 500])
        XCTAssertEqual(set.observedHitRatio, (800 + 500) / 2000.0, accuracy: 1e-12)

        let r = set.choose(key: key(prompt: 1, question: 0))!
        set.finished(r)
        XCTAssertGreaterThan(set.statuses[r].indexedChunks, 0)
        set.update(r, healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 10, "apus_prefix_cache_hit_tokens": 0])
        XCTAssertEqual(set.choose(key: key(prompt: 1, question: 1), excluding: [1 - r]), r)
        XCTAssertEqual(set.predictedHitRatio, 0, "after the restart nothing was predicted to hit")
    }

    func testRoutingKeysShareTheSharedPartOfPrompts() {
        let a = key(prompt: 0, question: 1), b = key(prompt: 0, question: 2), c = key(prompt: 1, question: 1)
        let common = zip(a, b).prefix { $0 == $1 }.count
        XCTAssertGreaterThan(common, 1000)
        XCTAssertLessThan(zip(a, c).prefix { $0 == $1 }.count, 40)
        let completion = RoutingKey.of(path: "/v1/completions", body: Data(#"{"model":"m","prompt":"Once upon a time"}"#.utf8))
        XCTAssertEqual(String(decoding: completion, as: UTF8.self), "m\u{1F}Once upon a time")
        XCTAssertEqual(RoutingKey.of(path: "/v1/completions", body: Data("not json".utf8)), [])
    }
}
