import Engine
import Foundation
import Models
import Prometheus

/// The server's Prometheus metrics: request counts by status, token counters, latency
/// histograms, and gauges read from the engine when scraped.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let promptTokens: Counter
    let generationTokens: Counter
    let draftTokens: Counter
    let acceptedDraftTokens: Counter
    let timeToFirstToken: ValueHistogram
    let interTokenLatency: ValueHistogram
    let endToEndLatency: ValueHistogram
    let queueTime: ValueHistogram
    let running: Gauge
    let waiting: Gauge
    let kvBlocksUsed: Gauge
    let kvBlocksTotal: Gauge
    let kvCapacityTokens: Gauge
    let prefixCacheHitRatio: Gauge
    let prefixCacheQueried: Gauge
    let prefixCacheHits: Gauge
    let preemptions: Gauge
    let swapOuts: Gauge
    let recomputedPreemptions: Gauge
    let exportedKVBlocks: Gauge
    let importedKVBlocks: Gauge

    public init() {
        energyStart = meter?.read()
        let latency: [Double] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60]
        promptTokens = registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "prompt_tokens", unitName: "total", helpText: "Prompt tokens of finished requests."))
        generationTokens = registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "generation_tokens", unitName: "total", helpText: "Tokens generated for finished requests."))
        draftTokens = registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "spec_decode_draft_tokens", unitName: "total", helpText: "Tokens drafted for speculative decoding and verified, for finished requests."))
        acceptedDraftTokens = registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "spec_decode_accepted_tokens", unitName: "total", helpText: "Drafted tokens verification kept, for finished requests."))
        timeToFirstToken = registry.makeValueHistogram(descriptor: .init(namespace: "apus", metricName: "time_to_first_token", unitName: "seconds", helpText: "From arrival to the first generated token."), buckets: latency)
        interTokenLatency = registry.makeValueHistogram(descriptor: .init(namespace: "apus", metricName: "inter_token_latency", unitName: "seconds", helpText: "Between consecutive generated tokens of a sample."), buckets: latency)
        endToEndLatency = registry.makeValueHistogram(descriptor: .init(namespace: "apus", metricName: "e2e_request_latency", unitName: "seconds", helpText: "From arrival to the last token."), buckets: latency)
        queueTime = registry.makeValueHistogram(descriptor: .init(namespace: "apus", metricName: "request_queue_time", unitName: "seconds", helpText: "From arrival to the first step that ran the request."), buckets: latency)
        running = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "num_requests_running", unitName: "", helpText: "Sequences in the running batch."))
        waiting = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "num_requests_waiting", unitName: "", helpText: "Sequences waiting to be scheduled."))
        kvBlocksUsed = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "kv_cache_blocks_used", unitName: "", helpText: "KV-cache blocks held by sequences."))
        kvBlocksTotal = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "kv_cache_blocks", unitName: "total", helpText: "KV-cache blocks in the pool."))
        kvCapacityTokens = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "kv_cache_capacity", unitName: "tokens", helpText: "Positions the KV-cache pool holds."))
        prefixCacheQueried = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "prefix_cache_queried_tokens", unitName: "", helpText: "Prompt tokens looked up in the prefix cache since the server started."))
        prefixCacheHits = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "prefix_cache_hit_tokens", unitName: "", helpText: "Prompt tokens the prefix cache served since the server started."))
        prefixCacheHitRatio = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "prefix_cache_hit_ratio", unitName: "", helpText: "Prompt tokens served from the prefix cache over prompt tokens seen."))
        preemptions = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "preemptions", unitName: "", helpText: "Sequences preempted so far."))
        swapOuts = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "swap_outs", unitName: "", helpText: "Preempted sequences whose keys and values were swapped out instead of recomputed."))
        recomputedPreemptions = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "recomputed_preemptions", unitName: "", helpText: "Preempted sequences recomputed."))
        exportedKVBlocks = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "kv_blocks_exported", unitName: "", helpText: "Prompt KV blocks shipped to decode workers since the server started."))
        importedKVBlocks = registry.makeGauge(descriptor: .init(namespace: "apus", metricName: "kv_blocks_imported", unitName: "", helpText: "KV blocks taken in from prefill workers since the server started."))
    }

    func countRequest(status: Int) {
        registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "requests", unitName: "total", helpText: "HTTP requests by status."), labels: [("status", "\(status)")]).increment()
    }

    func record(_ m: RequestMetrics) {
        promptTokens.increment(by: Int64(m.promptTokens))
        generationTokens.increment(by: Int64(m.completionTokens))
        draftTokens.increment(by: Int64(m.draftTokens))
        acceptedDraftTokens.increment(by: Int64(m.acceptedDraftTokens))
        timeToFirstToken.record(m.timeToFirstTokenSeconds)
        for gap in m.interTokenSeconds { interTokenLatency.record(gap) }
        endToEndLatency.record(m.totalSeconds)
        queueTime.record(m.queueSeconds)
    }

    private let lock = NSLock()
    nonisolated(unsafe) private var exported: [StepOperation: Double] = [:]
    private let meter = EnergyMeter()
    private let energyStart: EnergyMeter.Reading?
    nonisolated(unsafe) private var exportedJoules = 0.0

    /// Where powercap is readable: the CPU packages' joules since the server started.
    private func exportEnergy() {
        guard let meter, let energyStart else { return }
        lock.withLock {
            let joules = meter.joules(from: energyStart, to: meter.read())
            guard joules > exportedJoules else { return }
            registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "energy_joules", unitName: "total",
                                                   helpText: "Energy of the CPU packages since the server started (Linux powercap)."))
                .increment(by: joules - exportedJoules)
            exportedJoules = joules
        }
    }

    /// With `--profile`: each operation class's seconds, as counters advanced to the
    /// profile's totals.
    private func export(_ profile: OperationProfile.Snapshot) {
        lock.withLock {
            for (op, seconds) in profile.seconds where seconds > exported[op, default: 0] {
                registry.makeCounter(descriptor: .init(namespace: "apus", metricName: "operation_seconds", unitName: "total",
                                                                    helpText: "Time in each operation class of the engine's steps (--profile)."),
                                                  labels: [("operation", op.rawValue)]).increment(by: seconds - exported[op, default: 0])
                exported[op] = seconds
            }
        }
    }

    /// The text exposition, with the engine's gauges (and the operation profile, when on) as of now.
    func exposition(engine: EngineStatistics?, profile: OperationProfile.Snapshot? = nil) -> String {
        if let profile { export(profile) }
        exportEnergy()
        if let s = engine {
            running.set(Double(s.runningSequences))
            waiting.set(Double(s.waitingSequences))
            kvBlocksUsed.set(Double(s.kvBlocksUsed))
            kvBlocksTotal.set(Double(s.kvBlocksTotal))
            kvCapacityTokens.set(Double(s.kvBlocksTotal * s.kvBlockSize))
            prefixCacheQueried.set(Double(s.promptTokensQueried))
            prefixCacheHits.set(Double(s.promptTokensCached))
            prefixCacheHitRatio.set(s.promptTokensQueried == 0 ? 0 : Double(s.promptTokensCached) / Double(s.promptTokensQueried))
            preemptions.set(Double(s.preemptions))
            swapOuts.set(Double(s.swapOuts))
            recomputedPreemptions.set(Double(s.recomputedPreemptions))
            exportedKVBlocks.set(Double(s.exportedKVBlocks))
            importedKVBlocks.set(Double(s.importedKVBlocks))
        }
        return registry.emitToString()
    }
}
