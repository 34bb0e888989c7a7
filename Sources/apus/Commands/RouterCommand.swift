import ArgumentParser
import Foundation
import Logging
import Router
import Server

struct RouterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router",
        abstract: "Route OpenAI API requests over several `apus serve` replicas, each to the one that holds the longest cached prefix of its prompt.",
        discussion: """
            Every request and answer passes through byte for byte (streams included). cache-aware (the default, SGLang's \
            policy) sends a request to the replica whose prefix cache the router predicts holds most of its prompt, \
            unless loads differ by more than --balance-abs-threshold requests and --balance-rel-threshold times, or the \
            best match covers less than --cache-threshold of the prompt (then: the replica holding least). A request \
            that fails before its first byte is retried on another replica. GET /health, GET /metrics (the router's). \
            SIGINT or SIGTERM refuses new requests and waits up to --drain-seconds for those in flight. Disaggregated \
            prefill and decode: with --prefill workers (`apus serve --role prefill`), each completion or chat \
            completion is first computed on a prefill worker, whose KV blocks the router streams into the cache of \
            the decode replica it chose (--decode, `apus serve --role decode`), which then generates; if that fails, \
            the decode replica computes the prompt itself.
            """)

    @Option(name: .long, help: "A replica's base URL (http://host:port); repeat for each.")
    var replica: [String] = []

    @Option(name: .long, help: "NAME:PORT: every address NAME resolves to is a replica, resolved again each --health-interval (a Kubernetes headless Service).")
    var replicasFromDns: String?

    @Option(name: .long, help: "A prefill worker's base URL (`apus serve --role prefill`); repeat for each. Prompts are computed there and their KV blocks shipped to the replicas.")
    var prefill: [String] = []

    @Option(name: .long, help: "NAME:PORT: every address NAME resolves to is a prefill worker, resolved again each --health-interval.")
    var prefillFromDns: String?

    @Option(name: .long, help: "A decode worker's base URL (`apus serve --role decode`), a replica that takes KV blocks from the prefill workers; repeat for each.")
    var decode: [String] = []

    @Option(name: .long, help: "cache-aware, round-robin or least-loaded.")
    var policy: RoutingPolicy = .cacheAware

    @Option(name: .long, help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .long, help: "Port to listen on.")
    var port = 8000

    @Option(name: .long, help: "The API key replicas require, sent with health checks (default: $APUS_API_KEY); clients send their own.")
    var apiKey: String?

    @Option(name: .long, help: "Below this share of a prompt matched, route to the replica holding least.")
    var cacheThreshold = 0.5

    @Option(name: .long, help: "Loads are unbalanced past this many requests' difference...")
    var balanceAbsThreshold = 32

    @Option(name: .long, help: "...and this ratio; then a request goes to the least loaded replica.")
    var balanceRelThreshold = 1.0001

    @Option(name: .long, help: "Seconds between health checks of each replica.")
    var healthInterval = 1.0

    @Option(name: .long, help: "Seconds requests in flight get to finish after SIGINT/SIGTERM.")
    var drainSeconds = 30.0

    @Option(name: .long, help: "Largest request body accepted, in bytes.")
    var maxBodyBytes = 4 << 20

    func validate() throws {
        guard !replica.isEmpty || !decode.isEmpty || replicasFromDns != nil else {
            throw ValidationError("give at least one --replica (or --decode) URL, or --replicas-from-dns NAME:PORT")
        }
        if !decode.isEmpty && prefill.isEmpty && prefillFromDns == nil {
            throw ValidationError("--decode workers take KV blocks from prefill workers: give --prefill URL or --prefill-from-dns NAME:PORT, or name them --replica")
        }
        for (flag, dns) in [("--replicas-from-dns", replicasFromDns), ("--prefill-from-dns", prefillFromDns)] {
            if let dns, ReplicaDiscovery(dns) == nil { throw ValidationError("\(flag) \(dns) is not NAME:PORT") }
        }
        for (flag, urls) in [("--replica", replica), ("--decode", decode), ("--prefill", prefill)] {
            for url in urls {
                guard let u = URL(string: url), u.scheme == "http", u.host != nil, u.path.isEmpty || u.path == "/" else {
                    throw ValidationError("\(flag) \(url) is not a base URL such as http://127.0.0.1:8080")
                }
            }
        }
        guard (0...1).contains(cacheThreshold) else { throw ValidationError("--cache-threshold must be between 0 and 1, got \(cacheThreshold)") }
        guard balanceAbsThreshold >= 0, balanceRelThreshold >= 1 else { throw ValidationError("--balance-abs-threshold must be at least 0 and --balance-rel-threshold at least 1") }
        guard healthInterval > 0 else { throw ValidationError("--health-interval must be positive") }
    }

    func run() async throws {
        var configuration = RouterConfiguration()
        configuration.server.host = host
        configuration.server.port = port
        configuration.server.apiKey = apiKey ?? ProcessInfo.processInfo.environment["APUS_API_KEY"]
        configuration.server.drainSeconds = drainSeconds
        configuration.server.maxBodyBytes = maxBodyBytes
        configuration.healthInterval = healthInterval
        configuration.discovery = replicasFromDns.flatMap(ReplicaDiscovery.init)
        var balance = BalanceSettings()
        balance.cacheThreshold = cacheThreshold
        balance.absoluteThreshold = balanceAbsThreshold
        balance.relativeThreshold = balanceRelThreshold
        func base(_ url: String) -> String { url.hasSuffix("/") ? String(url.dropLast()) : url }
        let urls = (replica + decode).map(base)
        configuration.staticReplicas = urls
        configuration.staticPrefillWorkers = prefill.map(base)
        configuration.prefillDiscovery = prefillFromDns.flatMap(ReplicaDiscovery.init)
        let disaggregated = !prefill.isEmpty || prefillFromDns != nil
        let logger = Logger(label: "apus.router")
        let router = Router(replicas: ReplicaSet(urls: urls, policy: policy, balance: balance),
                            prefillWorkers: disaggregated ? ReplicaSet(urls: configuration.staticPrefillWorkers, policy: policy, balance: balance) : nil,
                            configuration: configuration, logger: logger)
        await router.checkReplicas()
        let monitoring = Task { await router.monitor() }
        let serving = Task { try await router.application().runService(gracefulShutdownSignals: []) }
        let prefilling = router.prefillWorkers.map { ", prompts computed on \($0.urls.joined(separator: ", "))" } ?? ""
        logger.info("routing on http://\(host):\(port) over \(router.replicas.urls.joined(separator: ", ")) (\(policy.rawValue))\(prefilling)")
        let stop = ShutdownSignals { signal, count in
            guard count == 1 else { Foundation.exit(1) }
            logger.info("\(signal): refusing new requests, waiting for \(router.requestsInFlight) in flight")
            Task {
                await router.drain()
                monitoring.cancel()
                logger.info("stopped")
                Foundation.exit(0)
            }
        }
        defer { withExtendedLifetime(stop) {} }
        try await serving.value
    }
}

extension RoutingPolicy: ExpressibleByArgument {}
