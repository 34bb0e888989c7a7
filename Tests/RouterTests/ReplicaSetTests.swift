@testable import Router
import XCTest

/// The routing policies on a replica set with no network: which replica each request gets.
final class ReplicaSetTests: XCTestCase {
    let urls = ["http://a", "http://b"]

    /// The index of the replica `set` chooses.
    func pick(_ set: ReplicaSet, _ key: [UInt8], excluding: Set<Int> = []) -> Int? {
        set.choose(key: key, excluding: Set(excluding.map { urls[$0] })).flatMap { urls.firstIndex(of: $0) }
    }

    /// Four system prompts, each with its own question: the routing key of a chat request.
    func key(prompt p: Int, question q: Int) -> [UInt8] {
        let body: [String: Any] = ["model": "m", "messages": [
            ["role": "system", "content": "System prompt \(p). " + String(repeating: "Answer briefly and cite the documents. ", count: 30)],
            ["role": "user", "content": "Question \(q)?"],
        ]]
        return RoutingKey.of(body)
    }

    func testCacheAwareKeepsEachPrefixOnOneReplicaAndSpreadsThePrefixes() {
        let set = ReplicaSet(urls: urls, policy: .cacheAware)
        var placed: [Int: Set<Int>] = [:]
        for q in 0..<5 {
            for p in 0..<4 {
                let r = pick(set, key(prompt: p, question: q))!
                placed[p, default: []].insert(r)
                set.finished(urls[r])
            }
        }
        XCTAssertEqual(placed.values.map(\.count), [1, 1, 1, 1], "\(placed)")
        XCTAssertEqual(Set(placed.values.map { $0.first! }), [0, 1], "the prefixes are spread: \(placed)")
        XCTAssertGreaterThan(set.predictedHitRatio, 0.75)
    }

    func testRoundRobinAlternatesAndLeastLoadedTakesTheIdleReplica() {
        let rr = ReplicaSet(urls: urls, policy: .roundRobin)
        XCTAssertEqual((0..<4).map { _ in pick(rr, key(prompt: 0, question: 0))! }, [0, 1, 0, 1])

        let ll = ReplicaSet(urls: urls, policy: .leastLoaded)
        XCTAssertEqual(pick(ll, []), 0)
        XCTAssertEqual(pick(ll, []), 1)
        XCTAssertEqual(pick(ll, []), 0)
        ll.finished(urls[1])
        XCTAssertEqual(pick(ll, []), 1)
    }

    func testUnbalancedLoadOverridesTheCache() {
        var balance = BalanceSettings()
        balance.absoluteThreshold = 4
        let set = ReplicaSet(urls: urls, policy: .cacheAware, balance: balance)
        let first = pick(set, key(prompt: 0, question: 0))!
        // Its replica gets busy with the same prefix (each still in flight)...
        for q in 1...4 { XCTAssertEqual(pick(set, key(prompt: 0, question: q)), first) }
        // ...until it has more than 4 more in flight than the other, which takes the next.
        XCTAssertEqual(pick(set, key(prompt: 0, question: 5)), 1 - first)
    }

    func testFailedAndUnhealthyReplicasAreSkipped() {
        let set = ReplicaSet(urls: urls, policy: .roundRobin)
        set.markFailed(urls[0])
        XCTAssertEqual(pick(set, []), 1)
        XCTAssertEqual(pick(set, []), 1)
        XCTAssertNil(pick(set, [], excluding: [1]))
        set.update(urls[0], healthy: true, gauges: ["apus_num_requests_waiting": 3])
        XCTAssertEqual(set.statuses[0].waiting, 3)
        XCTAssertEqual(pick(set, [], excluding: [1]), 0)
    }

    /// The replicas' own counters give the observed hit rate since the router started; a
    /// replica whose counters fall has restarted, and its index empties.
    func testObservedHitRatioAndRestarts() {
        let set = ReplicaSet(urls: urls, policy: .cacheAware)
        set.update(urls[0], healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 1000, "apus_prefix_cache_hit_tokens": 100])
        set.update(urls[1], healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 0, "apus_prefix_cache_hit_tokens": 0])
        set.update(urls[0], healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 2000, "apus_prefix_cache_hit_tokens": 900])
        set.update(urls[1], healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 1000, "apus_prefix_cache_hit_tokens": 500])
        XCTAssertEqual(set.observedHitRatio, (800 + 500) / 2000.0, accuracy: 1e-12)

        let r = pick(set, key(prompt: 1, question: 0))!
        set.finished(urls[r])
        XCTAssertGreaterThan(set.statuses[r].indexedChunks, 0)
        set.update(urls[r], healthy: true, gauges: ["apus_prefix_cache_queried_tokens": 10, "apus_prefix_cache_hit_tokens": 0])
        XCTAssertEqual(pick(set, key(prompt: 1, question: 1), excluding: [1 - r]), r)
        XCTAssertEqual(set.predictedHitRatio, 0, "after the restart nothing was predicted to hit")
    }

    func testRoutingKeysShareTheSharedPartOfPrompts() {
        let a = key(prompt: 0, question: 1), b = key(prompt: 0, question: 2), c = key(prompt: 1, question: 1)
        let common = zip(a, b).prefix { $0 == $1 }.count
        XCTAssertGreaterThan(common, 1000)
        XCTAssertLessThan(zip(a, c).prefix { $0 == $1 }.count, 40)
        let completion = RoutingKey.of(["model": "m", "prompt": "Once upon a time"])
        XCTAssertEqual(String(decoding: completion, as: UTF8.self), "m\u{1F}Once upon a time")
        XCTAssertEqual(RoutingKey.of(nil), [])
    }

    /// The set follows a changing list of replicas (a Service's endpoints), keeping what it
    /// knows of those that stay.
    func testMembershipChangesKeepWhatIsKnownOfReplicasThatStay() {
        let set = ReplicaSet(urls: urls, policy: .cacheAware)
        let k = key(prompt: 2, question: 0)
        let first = set.choose(key: k)!
        set.setURLs([first, "http://c"])
        XCTAssertEqual(set.urls, [first, "http://c"])
        XCTAssertEqual(set.statuses[0].inFlight, 1)
        XCTAssertEqual(set.choose(key: key(prompt: 2, question: 1)), first, "its index stayed")
        set.finished("http://gone")  // a request to a replica that left ends: nothing to count
        set.setURLs([])
        XCTAssertNil(set.choose(key: k))
    }

    func testDiscoveryParsesNameAndPortAndResolves() {
        XCTAssertNil(ReplicaDiscovery("no-port"))
        XCTAssertNil(ReplicaDiscovery("host:99999"))
        let local = ReplicaDiscovery("localhost:8080")!
        XCTAssertEqual(local.host, "localhost")
        XCTAssertTrue(local.resolve()?.contains("http://127.0.0.1:8080") == true, "\(String(describing: local.resolve()))")
        // No such name, or no resolver to ask: no replica either way.
        XCTAssertEqual(ReplicaDiscovery("no-such-host.invalid:80")!.resolve() ?? [], [])
    }
}
