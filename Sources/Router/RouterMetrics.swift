import Prometheus

/// The router's Prometheus metrics: requests per replica and status, retries, each
/// replica's health and load, and the prefix hit rate the router predicted against the one
/// the replicas observed.
public final class RouterMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let retries: Counter
    let predictedHitRatio: Gauge
    let observedHitRatio: Gauge
    let healthy: [String: Gauge]
    let inFlight: [String: Gauge]

    init(urls: [String]) {
        let registry = self.registry
        retries = registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "router_retries", unitName: "total",
                                                         helpText: "Requests sent to another replica after one failed before its first byte."))
        predictedHitRatio = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "router_prefix_hit_ratio_predicted", unitName: "",
                                                                 helpText: "Share of routed prompt text the chosen replica was predicted to hold in its prefix cache."))
        observedHitRatio = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "router_prefix_hit_ratio_observed", unitName: "",
                                                                helpText: "Share of prompt tokens the replicas' prefix caches served since the router started (their /metrics)."))
        healthy = Dictionary(uniqueKeysWithValues: urls.map { url in
            (url, registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "router_replica_healthy", unitName: "",
                                                       helpText: "1 while the replica passes its health check."), labels: [("replica", url)]))
        })
        inFlight = Dictionary(uniqueKeysWithValues: urls.map { url in
            (url, registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "router_replica_requests_in_flight", unitName: "",
                                                       helpText: "Requests the router has sent the replica that have not finished."), labels: [("replica", url)]))
        })
    }

    func countRequest(replica: String, status: Int) {
        registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "router_requests", unitName: "total", helpText: "Requests routed, by replica and status."),
                             labels: [("replica", replica), ("status", "\(status)")]).increment()
    }

    func countRetry() { retries.increment() }

    func update(_ replicas: ReplicaSet) {
        predictedHitRatio.set(replicas.predictedHitRatio)
        observedHitRatio.set(replicas.observedHitRatio)
        for r in replicas.statuses {
            healthy[r.url]?.set(Double(r.healthy ? 1 : 0))
            inFlight[r.url]?.set(Double(r.inFlight))
        }
    }
}
