import Prometheus

/// The router's Prometheus metrics: requests per replica and status, retries, each
/// replica's health and load, and the prefix hit rate the router predicted against the one
/// the replicas observed.
public final class RouterMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let retries: Counter
    let resumes: Counter
    let predictedHitRatio: Gauge
    let observedHitRatio: Gauge

    init() {
        let registry = self.registry
        retries = registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "router_retries", unitName: "total",
                                                         helpText: "Requests sent to another replica after one failed before its first byte."))
        resumes = registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "router_resumed_streams", unitName: "total",
                                                         helpText: "Streams moved to another replica after theirs failed mid-stream, from the tokens already sent."))
        predictedHitRatio = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "router_prefix_hit_ratio_predicted", unitName: "",
                                                                 helpText: "Share of routed prompt text the chosen replica was predicted to hold in its prefix cache."))
        observedHitRatio = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "router_prefix_hit_ratio_observed", unitName: "",
                                                                helpText: "Share of prompt tokens the replicas' prefix caches served since the router started (their /metrics)."))
    }

    func countRequest(replica: String, status: Int) {
        registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "router_requests", unitName: "total", helpText: "Requests routed, by replica and status."),
                             labels: [("replica", replica), ("status", "\(status)")]).increment()
    }

    func countRetry() { retries.increment() }

    func countResume() { resumes.increment() }

    func countPrefill(_ outcome: Router.PrefillOutcome) {
        let label: String
        switch outcome {
        case .imported(let blocks):
            label = "imported"
            registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "router_kv_blocks_transferred", unitName: "total",
                                                   helpText: "KV blocks carried from prefill workers into replicas' caches."))
                .increment(by: Int64(blocks))
        case .prefillFailed: label = "prefill_failed"
        case .refused: label = "refused"
        case .transferFailed: label = "transfer_failed"
        }
        registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "router_prefills", unitName: "total",
                                               helpText: "Prompts sent to a prefill worker, by outcome (anything but imported: the replica computed the prompt)."),
                             labels: [("outcome", label)]).increment()
    }

    func update(_ replicas: ReplicaSet) {
        predictedHitRatio.set(replicas.predictedHitRatio)
        observedHitRatio.set(replicas.observedHitRatio)
        for r in replicas.statuses {
            registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "router_replica_healthy", unitName: "", helpText: "1 while the replica passes its health check."),
                               labels: [("replica", r.url)]).set(Double(r.healthy ? 1 : 0))
            registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "router_replica_requests_in_flight", unitName: "",
                                                 helpText: "Requests the router has sent the replica that have not finished."),
                               labels: [("replica", r.url)]).set(Double(r.inFlight))
        }
    }
}
