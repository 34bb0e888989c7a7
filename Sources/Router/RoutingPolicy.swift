/// How the router picks a replica for a request.
public enum RoutingPolicy: String, CaseIterable, Sendable {
    /// The replica holding the longest cached prefix of the prompt, unless the replicas'
    /// loads are too far apart (SGLang's cache-aware policy).
    case cacheAware = "cache-aware"
    case roundRobin = "round-robin"
    /// The replica with the fewest requests in flight.
    case leastLoaded = "least-loaded"
}

/// When cache-aware routing gives way to balancing load (SGLang's router settings and defaults).
public struct BalanceSettings: Sendable {
    /// A prompt whose best match covers less than this share of it goes to the replica whose
    /// cache holds least (it has most room), not to the one that matched.
    public var cacheThreshold = 0.5
    /// Loads are unbalanced when the busiest replica has more than this many requests more
    /// than the least busy one...
    public var absoluteThreshold = 32
    /// ...and more than this many times as many; then a request goes to the least busy.
    public var relativeThreshold = 1.0001

    public init() {}

    func unbalanced(max: Int, min: Int) -> Bool {
        max - min > absoluteThreshold && Double(max) > Double(min) * relativeThreshold
    }
}
