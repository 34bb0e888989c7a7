import Foundation

/// One replica as the router sees it.
public struct ReplicaStatus: Sendable {
    public let url: String
    public var healthy = true
    /// Requests this router has sent it that have not finished.
    public var inFlight = 0
    /// The replica's own queue, from its `/metrics` (requests from other routers included).
    public var running = 0
    public var waiting = 0
    public var kvBlocksUsed = 0
    public var kvBlocksTotal = 0
    /// Prompt tokens it looked up in its prefix cache and found there, since it started.
    public var promptTokensQueried = 0
    public var promptTokensCached = 0
    /// Routing-key chunks the router believes it holds.
    public var indexedChunks = 0

    /// What the router balances: its own count, or the replica's queue when that is longer.
    var load: Int { max(inFlight, running + waiting) }
}

/// The replicas behind a router and what it believes of each: health, load, and an index of
/// the prompts it sent each one. Picks a replica for each request by the policy. Replicas
/// are named by their base URLs; the set can change while requests are in flight (a
/// Kubernetes Service's endpoints).
public final class ReplicaSet: @unchecked Sendable {
    struct Replica {
        var status: ReplicaStatus
        var index: PrefixIndex
        /// Its counters when the router first read them (the observed hit rate counts from there).
        var baseline: (queried: Int, cached: Int)?
    }

    public let policy: RoutingPolicy
    public let balance: BalanceSettings
    private let indexChunks: Int
    private let lock = NSLock()
    private var replicas: [Replica] = []
    private var nextRoundRobin = 0
    /// Routing-key bytes of every routed request, and how many the chosen replica matched.
    private var keyBytes = 0
    private var matchedBytes = 0
    /// Prompt tokens queried and cached at replicas that have left the set or restarted.
    private var retired = (queried: 0, cached: 0)

    /// `indexChunks`: how many routing-key chunks the router remembers per replica until its
    /// `/metrics` gives its KV capacity.
    public init(urls: [String], policy: RoutingPolicy, balance: BalanceSettings = BalanceSettings(), indexChunks: Int = 1 << 16) {
        self.policy = policy
        self.balance = balance
        self.indexChunks = indexChunks
        setURLs(urls)
    }

    public var urls: [String] { lock.withLock { replicas.map(\.status.url) } }
    public var statuses: [ReplicaStatus] { lock.withLock { replicas.map(\.status) } }

    /// Makes these the replicas, keeping what is known of those that stay.
    public func setURLs(_ urls: [String]) {
        lock.withLock {
            let old = Dictionary(replicas.map { ($0.status.url, $0) }, uniquingKeysWith: { a, _ in a })
            for gone in replicas where !urls.contains(gone.status.url) { retire(gone) }
            replicas = urls.map { old[$0] ?? Replica(status: ReplicaStatus(url: $0), index: PrefixIndex(capacity: indexChunks)) }
        }
    }

    private func retire(_ r: Replica) {
        guard let b = r.baseline else { return }
        retired.queried += r.status.promptTokensQueried - b.queried
        retired.cached += r.status.promptTokensCached - b.cached
    }

    /// The prompt share the chosen replicas were predicted to hold.
    public var predictedHitRatio: Double { lock.withLock { keyBytes == 0 ? 0 : Double(matchedBytes) / Double(keyBytes) } }

    /// The prompt share the replicas' prefix caches actually served since this router started.
    public var observedHitRatio: Double {
        lock.withLock {
            var (queried, cached) = retired
            for r in replicas {
                guard let b = r.baseline else { continue }
                queried += r.status.promptTokensQueried - b.queried
                cached += r.status.promptTokensCached - b.cached
            }
            return queried <= 0 ? 0 : Double(cached) / Double(queried)
        }
    }

    /// A replica for a request whose routing key is `key`, among the healthy ones not in
    /// `excluded` (those that already failed it); nil when none is left. The choice counts
    /// as in flight until `finished` is called with it.
    public func choose(key: [UInt8], excluding excluded: Set<String> = []) -> String? {
        let hashes = PrefixIndex.chunkHashes(key)
        return lock.withLock { () -> String? in
            let candidates = replicas.indices.filter { replicas[$0].status.healthy && !excluded.contains(replicas[$0].status.url) }
            guard !candidates.isEmpty else { return nil }
            func load(_ i: Int) -> Int { replicas[i].status.load }
            func matched(_ i: Int) -> Int { replicas[i].index.matchedChunks(hashes) }
            let leastLoaded = candidates.min { load($0) < load($1) }!
            let chosen: Int
            switch policy {
            case .roundRobin:
                chosen = candidates.first { $0 >= nextRoundRobin } ?? candidates[0]
                nextRoundRobin = chosen + 1
            case .leastLoaded:
                chosen = leastLoaded
            case .cacheAware:
                if balance.unbalanced(max: candidates.map(load).max()!, min: load(leastLoaded)) {
                    chosen = leastLoaded
                } else {
                    // The longest match; among equal matches the least loaded.
                    let best = candidates.max { a, b in matched(a) != matched(b) ? matched(a) < matched(b) : load(a) > load(b) }!
                    let share = hashes.isEmpty ? 0 : Double(matched(best)) / Double(hashes.count)
                    chosen = share > balance.cacheThreshold ? best : candidates.min { a, b in
                        let (ca, cb) = (replicas[a].index.count, replicas[b].index.count)
                        return ca != cb ? ca < cb : load(a) < load(b)
                    }!
                }
            }
            keyBytes += key.count
            matchedBytes += matched(chosen) * PrefixIndex.chunkBytes
            replicas[chosen].index.insert(hashes)
            replicas[chosen].status.indexedChunks = replicas[chosen].index.count
            replicas[chosen].status.inFlight += 1
            return replicas[chosen].status.url
        }
    }

    private func withReplica(_ url: String, _ body: (inout Replica) -> Void) {
        lock.withLock {
            guard let i = replicas.firstIndex(where: { $0.status.url == url }) else { return }
            body(&replicas[i])
        }
    }

    /// A request sent to `url` ended (a replica that left and came back meanwhile counts from 0).
    public func finished(_ url: String) { withReplica(url) { $0.status.inFlight = max(0, $0.status.inFlight - 1) } }

    /// A replica failed to answer: it takes no requests until a health check passes.
    public func markFailed(_ url: String) { withReplica(url) { $0.status.healthy = false } }

    /// What a health check found.
    public func update(_ url: String, healthy: Bool, gauges: [String: Double]) {
        lock.withLock {
            guard let i = replicas.firstIndex(where: { $0.status.url == url }) else { return }
            var r = replicas[i]
            r.status.healthy = healthy
            if !gauges.isEmpty {
                let queried = Int(gauges["apus_prefix_cache_queried_tokens"] ?? 0)
                let cached = Int(gauges["apus_prefix_cache_hit_tokens"] ?? 0)
                if queried < r.status.promptTokensQueried {
                    // It restarted: its counters and its cache start again from nothing.
                    retire(r)
                    r.baseline = (0, 0)
                    r.index = PrefixIndex(capacity: r.index.capacity)
                    r.status.indexedChunks = 0
                }
                if r.baseline == nil { r.baseline = (queried, cached) }
                r.status.promptTokensQueried = queried
                r.status.promptTokensCached = cached
                r.status.running = Int(gauges["apus_num_requests_running"] ?? 0)
                r.status.waiting = Int(gauges["apus_num_requests_waiting"] ?? 0)
                r.status.kvBlocksUsed = Int(gauges["apus_kv_cache_blocks_used"] ?? 0)
                r.status.kvBlocksTotal = Int(gauges["apus_kv_cache_blocks_total"] ?? 0)
                // Its KV capacity in routing-key chunks, at about 4 bytes of text per token.
                if let tokens = gauges["apus_kv_cache_capacity_tokens"], tokens > 0 {
                    r.index.capacity = max(1, Int(tokens) * 4 / PrefixIndex.chunkBytes)
                }
            }
            replicas[i] = r
        }
    }
}
