import ArgumentParser
import Engine
import Foundation
import GGUF
import Hummingbird
import Kernels
import Logging
import Models
import Server
import Tokenizer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve models over OpenAI's HTTP API (completions, chat completions, responses, streaming).",
        discussion: """
            Endpoints: POST /v1/completions, POST /v1/chat/completions, POST /v1/responses, POST /v1/embeddings, GET /v1/models, \
            POST /tokenize, POST /detokenize, GET /tokenizer_info, POST /kv/import (KV blocks from a prefill worker, with --role decode or both), GET / (a chat page), GET /health (200 once the model is loaded), GET /metrics (Prometheus). With \
            --api-key or APUS_API_KEY, every endpoint but /health needs `Authorization: Bearer KEY`. SIGINT or \
            SIGTERM refuses new requests (503), lets those in flight finish for up to --drain-seconds, then exits. \
            With --model given more than once, requests go to the model they name (404 for another name); the \
            first loads at start, the others on first use, within --max-loaded-models and --memory-budget, \
            unloading the least recently used idle one to make room and any idle for --keep-alive seconds.
            """)

    /// The pooling an embedding model's file names (llama.cpp's `pooling_type`: 1 mean,
    /// 2 cls, 3 last); mean for a file that names none, as most chat models do.
    static func pooling(of file: GGUFFile) throws -> Pooling {
        let architecture = try file.metadata.string("general.architecture")
        switch try file.metadata.optionalInt("\(architecture).pooling_type") {
        case 2: return .cls
        case 3: return .last
        default: return .mean
        }
    }

    @OptionGroup var modelArguments: ModelArguments
    @OptionGroup var engineArguments: EngineArguments

    @Option(name: .long, help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .long, help: "Port to listen on.")
    var port = 8080

    @Option(name: .long, help: "Require this API key (default: $APUS_API_KEY; none when unset).")
    var apiKey: String?

    @Option(name: .long, help: "A name clients may use for the model; repeat for aliases, the first is its id (default: the file name without .gguf, and the model's name from `apus list` when --model gave one).")
    var servedModelName: [String] = []

    @Flag(name: .long, help: "Refuse (404) requests that name a model other than the served one (default: serve them with it, as llama-server).")
    var strictModelNames = false

    @Option(name: .long, help: "How /v1/embeddings pools a prompt's hidden states: mean, cls or last (default: the file's <arch>.pooling_type, else mean).")
    var pooling: Pooling?

    @Option(name: .long, help: "Models loaded at once; past it the least recently used idle one unloads (Ollama's OLLAMA_MAX_LOADED_MODELS).")
    var maxLoadedModels = 3

    @Option(name: .long, help: "Memory for all loaded models together, weights and KV cache (e.g. 8GiB; default: no limit).")
    var memoryBudget: String?

    @Option(name: .long, help: "Seconds a model stays loaded with no request (negative: forever; default: forever with one model, 300 with several).")
    var keepAlive: Double?

    @Flag(name: .long, help: "Serve no chat page at / (llama-server's --no-webui).")
    var noChatPage = false

    @Option(name: .long, help: "Origins browsers may call the API from, comma-separated (default: *, any).")
    var allowedOrigins = "*"

    @Option(name: .long, help: "Waiting sequences past which requests get 429.")
    var maxWaiting = 256

    @Option(name: .long, help: "Largest n (samples per prompt) a request may ask for.")
    var maxN = 16

    @Option(name: .long, help: "Seconds in-flight requests get to finish on SIGINT/SIGTERM; those still running are then cut.")
    var drainSeconds: Double = 30

    @Option(name: .long, help: "Seconds a connection may stay open with no request in progress.")
    var idleTimeout: Double = 5

    @Option(name: .long, help: "Seconds from a request's first byte to the end of its headers.")
    var headerTimeout: Double = 10

    @Option(name: .long, help: "Seconds from a request's first byte to the end of its body.")
    var readTimeout: Double = 30

    @Option(name: .long, help: "Connections open at once (default: below the file-descriptor limit).")
    var maxConnections: Int?

    @Option(name: .long, help: "Connections one client address may hold at once (default: no limit).")
    var maxConnectionsPerClient: Int?

    @Option(name: .long, help: "Stream chunks a client may leave unread before its request is aborted.")
    var maxUnsentChunks = 1024

    @Option(name: .long, help: "Largest request body in bytes.")
    var maxBodyBytes = 4 << 20

    @Option(name: .long, help: "Disaggregated prefill and decode: prefill (computes prompts and ships their KV blocks), decode (takes blocks in and generates) or both. Every role serves the whole API; `apus router --prefill URL --decode URL` pairs them.")
    var role: WorkerRole = .both

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be between 0 and 65535") }
        if maxWaiting < 1 || maxN < 1 || drainSeconds < 0 { throw ValidationError("--max-waiting and --max-n must be at least 1, --drain-seconds at least 0") }
        for (name, value) in [("--idle-timeout", idleTimeout), ("--header-timeout", headerTimeout), ("--read-timeout", readTimeout)] where !(value > 0 && value <= 86400) {
            throw ValidationError("\(name) must be between 0 and 86400 seconds, got \(value)")
        }
        for (name, value) in [("--max-connections", maxConnections), ("--max-connections-per-client", maxConnectionsPerClient)] {
            if let value, value < 1 { throw ValidationError("\(name) must be at least 1") }
        }
        if servedModelName.contains(where: { $0.isEmpty || $0.contains(where: \.isWhitespace) }) { throw ValidationError("--served-model-name takes names without spaces") }
        if maxLoadedModels < 1 { throw ValidationError("--max-loaded-models must be at least 1") }
        if role != .both && modelArguments.kvCache.type.keys.isPerChannel {
            throw ValidationError("--role \(role) ships KV blocks, which kivi4 keys cannot: use f16, q8_0 or q4_0 keys")
        }
        if role == .decode && engineArguments.noPrefixCache {
            throw ValidationError("--role decode imports KV blocks into the prefix cache; drop --no-prefix-cache")
        }
        if maxUnsentChunks < 1 || maxBodyBytes < 1024 { throw ValidationError("--max-unsent-chunks must be at least 1, --max-body-bytes at least 1024") }
    }

    /// Every --model, fetched if needed, each to be loaded on first use.
    func modelPool(logger: Logger) throws -> ModelPool {
        let all = try modelArguments.each()
        if all.count > 1 {
            guard servedModelName.isEmpty else { throw ValidationError("--served-model-name names one model; with several --model, each is named by its file (and its `apus list` name)") }
            guard engineArguments.speculation.mode != .draft else { throw ValidationError("--speculative draft drafts for one model; serve one --model with it") }
        }
        var limits = ModelPool.Limits()
        limits.maxLoaded = maxLoadedModels
        limits.memoryBytes = try memoryBudget.map(Self.bytes)
        let keep = keepAlive ?? (all.count > 1 ? 300 : -1)
        limits.keepAlive = keep < 0 ? nil : keep
        // One set of worker threads for every model: their operations take turns on it.
        let workers = ThreadPool(threads: modelArguments.threads ?? ModelOptions.defaultThreads)
        let models = try all.map { arguments -> ModelPool.Model in
            let path = try arguments.resolvedPath()
            let fileBytes = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            var names = servedModelName
            if names.isEmpty {
                names = [ServedModel.slug(URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent)]
                if let catalogName = arguments.catalogName, catalogName != names[0] { names.append(catalogName) }
            }
            return ModelPool.Model(names: names, bytes: fileBytes + engineArguments.configuration.kvCacheBytes) { [engineArguments, pooling, names] in
                let loaded = try arguments.load(pool: workers, residency: .hugePages)
                let engine = try Engine(model: loaded.model, tokenizer: loaded.tokenizer, configuration: engineArguments.configuration,
                                        draftModel: try engineArguments.speculation.loadDraft(like: arguments, residency: .hugePages))
                engine.operationProfile.isEnabled = engineArguments.profile
                // Completions work without a template; chat completions are then refused.
                let template: ChatTemplate?
                do {
                    template = try loaded.chatTemplate()
                } catch {
                    logger.warning("\(names[0]): chat completions are off: \(error)")
                    template = nil
                }
                return ServedModel(engine: engine, tokenizer: loaded.tokenizer, chatTemplate: template,
                                   name: names[0], aliases: Array(names.dropFirst()), pooling: try pooling ?? Self.pooling(of: loaded.file),
                                   kvIdentity: loaded.kvIdentity)
            }
        }
        do {
            return try ModelPool(models, limits: limits)
        } catch let error as APIError {
            throw ValidationError(error.message)
        }
    }

    /// A size such as 8GiB, 512MiB, 4GB or 1000000 (bytes).
    static func bytes(_ text: String) throws -> Int {
        let (gi, mi, ki) = (Double(1 << 30), Double(1 << 20), Double(1 << 10))
        let units: [(String, Double)] = [("GiB", gi), ("MiB", mi), ("KiB", ki), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("G", gi), ("M", mi), ("K", ki), ("B", 1), ("", 1)]
        for (unit, scale) in units where text.hasSuffix(unit) {
            if let value = Double(text.dropLast(unit.count).trimmingCharacters(in: .whitespaces)), value > 0, value * scale < 1e18 { return Int(value * scale) }
            break
        }
        throw ValidationError("--memory-budget takes a size such as 8GiB, 512MiB or a number of bytes, not \(text)")
    }

    func run() async throws {
        try await reportingErrors {
            var configuration = ServerConfiguration()
            configuration.host = host
            configuration.port = port
            configuration.apiKey = apiKey ?? ProcessInfo.processInfo.environment["APUS_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
            configuration.maxWaitingRequests = maxWaiting
            configuration.limits.maxSamples = maxN
            configuration.drainSeconds = drainSeconds
            configuration.idleTimeout = idleTimeout
            configuration.headerTimeout = headerTimeout
            configuration.readTimeout = readTimeout
            configuration.maxConnections = maxConnections
            configuration.maxConnectionsPerClient = maxConnectionsPerClient
            configuration.maxUnsentChunks = maxUnsentChunks
            configuration.maxBodyBytes = maxBodyBytes
            configuration.strictModelNames = strictModelNames
            configuration.chatPage = !noChatPage
            configuration.role = role
            configuration.allowedOrigins = allowedOrigins.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            let logger = Logger(label: "apus.server")
            let server = APIServer(configuration: configuration, logger: logger)
            let app = server.application()
            let serving = Task { try await app.runService(gracefulShutdownSignals: []) }

            // Listening starts first, so /health can say "loading" while the first model loads.
            let pool = try await Task.detached { try modelPool(logger: logger) }.value
            let first = try await pool.lease(nil, strict: false).model
            server.ready(pool)
            logger.info("serving \(pool.allNames.joined(separator: ", ")) on http://\(host):\(port) (\(first.name) loaded, context \(first.engine.contextLength))")

            let stop = ShutdownSignals { signal, count in
                guard count == 1 else {
                    logger.warning("\(signal) again: exiting now, with \(server.requestsInFlight) requests in flight")
                    Foundation.exit(1)
                }
                logger.info("\(signal): refusing new requests, waiting for \(server.requestsInFlight) in flight (a second signal exits at once)")
                Task {
                    await server.drain()
                    pool.shutdown()
                    logger.info("stopped")
                    Foundation.exit(0)
                }
            }
            defer { withExtendedLifetime(stop) {} }
            try await serving.value
        }
    }
}

/// SIGINT and SIGTERM delivered to a handler, with how many have come so far, instead of
/// ending the process.
final class ShutdownSignals {
    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable (String, Int) -> Void) {
        let queue = DispatchQueue(label: "apus.signals")
        nonisolated(unsafe) var count = 0
        sources = [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")].map { number, name in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                count += 1
                handler(name, count)
            }
            source.resume()
            return source
        }
    }
}
