import ArgumentParser
import Engine
import Foundation
import GGUF
import Hummingbird
import Logging
import Server

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over OpenAI's HTTP API (completions, chat completions, streaming).",
        discussion: """
            Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, POST /tokenize, \
            POST /detokenize, GET /health (200 once the model is loaded), GET /metrics (Prometheus). With \
            --api-key or APUS_API_KEY, every endpoint but /health needs `Authorization: Bearer KEY`. SIGINT or \
            SIGTERM refuses new requests (503), lets those in flight finish for up to --drain-seconds, then exits.
            """)

    @OptionGroup var modelArguments: ModelArguments
    @OptionGroup var engineArguments: EngineArguments

    @Option(name: .long, help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(name: .long, help: "Port to listen on.")
    var port = 8080

    @Option(name: .long, help: "Require this API key (default: $APUS_API_KEY; none when unset).")
    var apiKey: String?

    @Option(name: .long, help: "The model name clients use (default: the GGUF's general.name, else its file name).")
    var servedModelName: String?

    @Option(name: .long, help: "Waiting sequences past which requests get 429.")
    var maxWaiting = 256

    @Option(name: .long, help: "Largest n (samples per prompt) a request may ask for.")
    var maxN = 16

    @Option(name: .long, help: "Seconds in-flight requests get to finish on SIGINT/SIGTERM.")
    var drainSeconds: Double = 30

    func validate() throws {
        if !(0...65535).contains(port) { throw ValidationError("--port must be between 0 and 65535") }
        if maxWaiting < 1 || maxN < 1 || drainSeconds < 0 { throw ValidationError("--max-waiting and --max-n must be at least 1, --drain-seconds at least 0") }
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
            let logger = Logger(label: "apus.server")
            let server = APIServer(configuration: configuration, logger: logger)
            let app = Application(responder: server, server: APIServer.http1, configuration: .init(address: .hostname(host, port: port), serverName: "apus"),
                                  logger: logger)
            let serving = Task { try await app.runService(gracefulShutdownSignals: []) }

            // Listening starts first, so /health can say "loading" while the model loads.
            let model = try await Task.detached { () throws -> ServedModel in
                let loaded = try modelArguments.load()
                let engine = try Engine(model: loaded.model, tokenizer: loaded.tokenizer, configuration: engineArguments.configuration,
                                    draftModel: try engineArguments.speculation.loadDraft(like: modelArguments))
                let fileName = URL(fileURLWithPath: try modelArguments.resolvedPath()).deletingPathExtension().lastPathComponent
                let name = servedModelName ?? (try? loaded.file.metadata.string("general.name")) ?? fileName
                return ServedModel(engine: engine, tokenizer: loaded.tokenizer, chatTemplate: try? loaded.chatTemplate(), name: name)
            }.value
            server.ready(model)
            logger.info("serving \(model.name) on http://\(host):\(port) (context \(model.engine.contextLength))")

            let stop = ShutdownSignals { signal in
                logger.info("\(signal): refusing new requests, waiting for \(server.requestsInFlight) in flight")
                Task {
                    await server.drain()
                    model.engine.shutdown()
                    logger.info("stopped")
                    Foundation.exit(0)
                }
            }
            defer { withExtendedLifetime(stop) {} }
            try await serving.value
        }
    }
}

/// SIGINT and SIGTERM delivered to a handler instead of ending the process.
final class ShutdownSignals {
    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable (String) -> Void) {
        sources = [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")].map { number, name in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { handler(name) }
            source.resume()
            return source
        }
    }
}
