import Foundation

/// One replica as the router sees it.
public struct ReplicaStatus: Sendable {
    public let url: String
    public var healthy: Bool
    /// Requests this router has sent it that have not finished.
    public var inFlight: Int
    /// The replica's own queue, from its `/metrics` (requests from other routers included).
    public var running: Int
    public var waiting: Int
    public var kvBlocksUsed: Int
    public var kvBlocksTotal: Int
    /// Prompt tokens it looked up in its prefix cache and found there, since it started.
    public var promptTokensQueried: Int
    public var promptTokensCached: Int
    /// Routing-key chunks the router believes it holds.
    public var indexedChunks: Int

    /// What the router balances: its own count, or the replica's queue when that is longer.
    var load: Int { max(inFlight, running + waiting) }
}

/// The replicas behind a router and what it believes of each: health, load, and an index of
/// the prompts it sent each one. Picks a replica for each request by the policy.
public final class ReplicaSet: @unchecked Sendable {
    public let policy: RoutingPolicy
    public let balance: BalanceSettings
    private let lock = NSLock()
    private var replicas: [ReplicaStatus]
    private var indexes: [PrefixIndex]
    private var nextRoundRobin = 0
    private var baseline: [(queried: Int, cached: Int)?]
    /// Routing-key bytes of every routed request, and how many the chosen replica matched.
    private(set) var keyBytes = 0
    private(set) var matchedBytes = 0

    /// `indexChunks`: how many routing-key chunks the router remembers per replica (about
    /// what its KV cache holds, at ~4 bytes of text per token).
    public init(urls: [String], policy: RoutingPolicy, balance: BalanceSettings = BalanceSettings(), indexChunks: Int = 1 << 16) {
        replicas = urls.map { ReplicaStatus(url: $0, healthy: true, inFlight: 0, running: 0, waiting: 0, kvBlocksUsed: 0, kvBlocksTotal: 0,
                                            promptTokensQueried: 0, promptTokensCached: 0, indexedChunks: 0) }
        indexes = urls.map { _ in PrefixIndex(capacity: indexChunks) }
        baseline = urls.map { _ in nil }
        self.policy = policy
        self.balance = balance
    }

    public var urls: [String] { lock.withLock { replicas.map(\.url) } }
    public var statuses: [ReplicaStatus] { lock.withLock { replicas.map { r in r } } }

    /// The prompt share the chosen replicas were predicted to hold.
    public var predictedHitRatio: Double { lock.withLock { keyBytes == 0 ? 0 : Double(matchedBytes) / Double(keyBytes) } }

    /// The prompt share the replicas' prefix caches actually served since this router started.
    public var observedHitRatio: Double {
        lock.withLock {
            var queried = 0, cached = 0
            for (r, b) in zip(replicas, baseline) {
                guard let b else { continue }
                queried += r.promptTokensQueried - b.queried
                cached += r.promptTokensCached - b.cached
            }
            return queried <= 0 ? 0 : Double(cached) / Double(queried)
        }
    }

    /// A replica for a request whose routing key is `key`, among the healthy ones not in
    /// `excluded` (those that already failed it); nil when none is left. The choice counts
    /// as in flight until `finished` is called with it.
    public func choose(key: [UInt8], excluding excluded: Set<Int> = []) -> Int? {
        let hashes = PrefixIndex.chunkHashes(key)
        return lock.withLock { () -> Int? in
            let candidates = replicas.indices.filter { replicas[$0].healthy && !excluded.contains($0) }
            guard !candidates.isEmpty else { return nil }
            let leastLoaded = candidates.min { replicas[$0].load < replicas[$1].load }!
            let chosen: Int
            switch policy {
            case .roundRobin:
                chosen = candidates.first { $0 >= nextRoundRobin } ?? candidates[0]
                nextRoundRobin = chosen + 1
            case .leastLoaded:
                chosen = leastLoaded
            case .cacheAware:
                let busiest = candidates.map { replicas[$0].load }.max()!
                if balance.unbalanced(max: busiest, min: replicas[leastLoaded].load) {
                    chosen = leastLoaded
                } else {
                    // The longest match; among equal matches the least loaded.
                    let best = candidates.max { a, b in
                        let (ma, mb) = (indexes[a].matchedChunks(hashes), indexes[b].matchedChunks(hashes))
                        return ma != mb ? ma < mb : replicas[a].load > replicas[b].load
                    }!
                    let share = hashes.isEmpty ? 0 : Double(indexes[best].matchedChunks(hashes)) / Double(hashes.count)
                    chosen = share > balance.cacheThreshold ? best
                        : candidates.min { a, b in
                            indexes[a].count != indexes[b].count ? indexes[a].count < indexes[b].count : replicas[a].load < replicas[b].load
                        }!
                }
            }
            keyBytes += key.count
            matchedBytes += indexes[chosen].matchedChunks(hashes) * PrefixIndex.chunkBytes
            indexes[chosen].insert(hashes)
            replicas[chosen].indexedChunks = indexes[chosen].count
            replicas[chosen].inFlight += 1
            return chosen
        }
    }

    public func finished(_ replica: Int) {
        lock.withLock { replicas[replica].inFlight -= 1 }
    }

    /// A replica failed to answer: it takes no requests until a health check passes.
    public func markFailed(_ replica: Int) {
        lock.withLock { replicas[replica].healthy = false }
    }

    /// What a health check found.
    public func update(_ replica: Int, healthy: Bool, gauges: [String: Double]) {
        lock.withLock {
            replicas[replica].healthy = healthy
            guard !gauges.isEmpty else { return }
            var r = replicas[replica]
            r.running = Int(gauges["apus_num_requests_running"] ?? 0)
            r.waiting = Int(gauges["apus_num_requests_waiting"] ?? 0)
            r.kvBlocksUsed = Int(gauges["apus_kv_cache_blocks_used"] ?? 0)
            r.kvBlocksTotal = Int(gauges["apus_kv_cache_blocks_total"] ?? 0)
            let queried = Int(gauges["apus_prefix_cache_queried_tokens"] ?? 0)
            let cached = Int(gauges["apus_prefix_cache_hit_tokens"] ?? 0)
            if baseline[replica] == nil { baseline[replica] = (queried, cached) }
            if queried < r.promptTokensQueried {
                // It restarted: its counters and its cache start again from nothing.
                baseline[replica] = (0, 0)
                indexes[replica] = PrefixIndex(capacity: indexes[replica].capacity)
            }
            // Its KV capacity in routing-key chunks, at about 4 bytes of text per token.
            if let tokens = gauges["apus_kv_cache_capacity_tokens"], tokens > 0 {
                indexes[replica].capacity = max(1, Int(tokens) * 4 / PrefixIndex.chunkBytes)
            }
            r.promptTokensQueried = queried
            r.promptTokensCached = cached
            replicas[replica] = r
        }
    }
}
