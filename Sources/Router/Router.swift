import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Server

/// Settings of `apus router`.
public struct RouterConfiguration: Sendable {
    /// Host, port, key, body and connection limits, drain time: as the API server's.
    public var server = ServerConfiguration()
    /// Seconds between health checks (`/health` and `/metrics` of every replica).
    public var healthInterval = 1.0
    /// Seconds a replica gets to accept a connection or answer a health check.
    public var connectTimeout = 2.0
    /// Replicas given by URL; with `discovery`, those it finds join them.
    public var staticReplicas: [String] = []
    /// A DNS name whose addresses are the replicas (a Kubernetes headless Service),
    /// resolved again before each round of health checks.
    public var discovery: ReplicaDiscovery?
    /// Prefill workers (disaggregated prefill and decode): given by URL, and found by DNS.
    /// With any, every generation request's prompt is computed on one of them and its KV
    /// blocks carried to the replica that then decodes it.
    public var staticPrefillWorkers: [String] = []
    public var prefillDiscovery: ReplicaDiscovery?

    public init() {}
}

/// The OpenAI API in front of replicas: each request goes, byte for byte, to the replica the
/// policy picks, and its answer (streams included) comes back byte for byte. A request that
/// fails before the replica's first byte (the connection refused, the replica draining or
/// loading) is retried on another; the replica that failed takes nothing until its health
/// check passes again.
public final class Router: HTTPResponder, @unchecked Sendable {
    public typealias Context = APIRequestContext

    public let configuration: RouterConfiguration
    public let replicas: ReplicaSet
    /// Workers that compute prompts for the replicas (disaggregated prefill); nil: none.
    public let prefillWorkers: ReplicaSet?
    public let metrics: RouterMetrics
    let client: HTTPClient
    let logger: Logger
    private let lock = NSLock()
    private var draining = false
    private var inFlight = 0

    static let generationPaths: Set<String> = ["/v1/completions", "/v1/chat/completions"]

    /// Headers that belong to one connection, not to the request or answer passed on.
    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"]

    public init(replicas: ReplicaSet, prefillWorkers: ReplicaSet? = nil, configuration: RouterConfiguration = RouterConfiguration(),
                logger: Logger = Logger(label: "apus.router")) {
        self.replicas = replicas
        self.prefillWorkers = prefillWorkers
        self.configuration = configuration
        self.logger = logger
        metrics = RouterMetrics()
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.timeout = .init(connect: .milliseconds(Int64(configuration.connectTimeout * 1000)))
        // Every stream holds a connection for its whole length; the router's own connection
        // limit bounds them, not the pool.
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 16_384)
        clientConfiguration.redirectConfiguration = .disallow
        clientConfiguration.decompression = .disabled
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)
    }

    public func shutdown() async { try? await client.shutdown() }

    public func application(port: Int? = nil, onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) -> Application<Router> {
        APIServer.application(serving: self, configuration: configuration.server, logger: logger, port: port, onServerRunning: onServerRunning)
    }

    public var requestsInFlight: Int { lock.withLock { inFlight } }

    /// Refuses new requests with 503 and waits up to the drain time for those in flight.
    public func drain() async {
        lock.withLock { draining = true }
        let deadline = Date().addingTimeInterval(configuration.server.drainSeconds)
        while requestsInFlight > 0 && Date() < deadline { try? await Task.sleep(nanoseconds: 20_000_000) }
    }

    // MARK: Health

    /// Checks every replica each `healthInterval` until cancelled.
    public func monitor() async {
        while !Task.isCancelled {
            await checkReplicas()
            try? await Task.sleep(nanoseconds: UInt64(configuration.healthInterval * 1e9))
        }
    }

    /// One round of health checks, all replicas (and prefill workers) at once.
    public func checkReplicas() async {
        await check(replicas, named: "replicas", staticURLs: configuration.staticReplicas, discovery: configuration.discovery)
        if let prefillWorkers {
            await check(prefillWorkers, named: "prefill workers", staticURLs: configuration.staticPrefillWorkers, discovery: configuration.prefillDiscovery)
        }
        metrics.update(replicas)
        if let prefillWorkers { metrics.update(prefillWorkers) }
    }

    private func check(_ replicas: ReplicaSet, named: String, staticURLs: [String], discovery: ReplicaDiscovery?) async {
        if let discovery, let found = discovery.resolve() {
            let urls = staticURLs + found.filter { !staticURLs.contains($0) }
            if urls != replicas.urls {
                logger.info("\(named): \(urls.isEmpty ? "none" : urls.joined(separator: ", ")) (\(discovery.host) resolved to \(found.count))")
                replicas.setURLs(urls)
            }
        }
        let before = Dictionary(replicas.statuses.map { ($0.url, $0.healthy) }, uniquingKeysWith: { a, _ in a })
        await withTaskGroup(of: Void.self) { group in
            for url in replicas.urls {
                group.addTask { [self] in
                    let healthy = await fetch(url + "/health")?.status == 200
                    let gauges = healthy ? await fetch(url + "/metrics").map { Self.gauges($0.text) } ?? [:] : [:]
                    replicas.update(url, healthy: healthy, gauges: gauges)
                    if before[url] != healthy { logger.info("\(replicas === self.replicas ? "replica" : "prefill worker") \(url) is \(healthy ? "healthy" : "unhealthy")") }
                }
            }
        }
    }

    private func fetch(_ url: String) async -> (status: Int, text: String)? {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "accept", value: "*/*")
        if let key = configuration.server.apiKey { request.headers.add(name: "authorization", value: "Bearer \(key)") }
        guard let response = try? await client.execute(request, timeout: .milliseconds(Int64(configuration.connectTimeout * 1000))),
              let body = try? await response.body.collect(upTo: 8 << 20) else { return nil }
        return (Int(response.status.code), String(buffer: body))
    }

    /// The unlabelled samples of a Prometheus text exposition.
    static func gauges(_ exposition: String) -> [String: Double] {
        var values: [String: Double] = [:]
        for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2, !parts[0].contains("{"), let value = Double(parts[1]) else { continue }
            values[String(parts[0])] = value
        }
        return values
    }

    // MARK: Routing

    public func respond(to request: Request, context: Context) async throws -> Response {
        let path = request.uri.path
        if path == "/health" {
            let healthy = replicas.statuses.filter(\.healthy).count
            let isDraining = lock.withLock { draining }
            let status: HTTPResponse.Status = healthy > 0 && !isDraining ? .ok : .serviceUnavailable
            let body = ["status": isDraining ? "draining" : healthy > 0 ? "ok" : "no healthy replica", "healthy_replicas": healthy] as [String: Any]
            var response = APIServer.json(status, body)
            if request.method == .head { response.body = ResponseBody() }
            return response
        }
        if path == "/metrics" && request.method == .get {
            metrics.update(replicas)
            if let prefillWorkers { metrics.update(prefillWorkers) }
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.registry.emitToString())))
        }
        let admitted = lock.withLock { () -> Bool in
            guard !draining else { return false }
            inFlight += 1
            return true
        }
        guard admitted else { return Self.error(.serviceUnavailable, "the router is shutting down", type: "server_error") }
        var held = true
        defer { if held { lock.withLock { inFlight -= 1 } } }

        let limit = configuration.server.maxBodyBytes
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: limit)
        } catch {
            return Self.error(.contentTooLarge, "the request body is larger than the limit of \(limit) bytes", type: "invalid_request_error")
        }
        let json = request.method == .post ? (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] : nil
        let key = RoutingKey.of(json)
        let relay = json.flatMap { StreamRelay.resumable(path: path, body: $0) ? StreamRelay(request: $0) : nil }
        var tried = Set<String>()
        var lastFailure = "no replica is healthy"
        let disaggregated = prefillWorkers != nil && request.method == .post && json != nil && Self.generationPaths.contains(path)
        while let url = replicas.choose(key: key, excluding: tried) {
            // The first replica chosen decodes what a prefill worker computed; one tried
            // after it failed computes the prompt itself.
            if disaggregated && tried.isEmpty {
                await prefill(request, body: body, key: key, model: json?["model"] as? String, into: url, channel: context.channel)
            }
            tried.insert(url)
            do {
                let response = try await forward(request, body: body, to: url, channel: context.channel, tokenIDs: relay != nil)
                // Draining or still loading: another replica may take it at once.
                if response.status == .serviceUnavailable, replicas.statuses.contains(where: { !tried.contains($0.url) && $0.healthy }) {
                    replicas.finished(url)
                    replicas.markFailed(url)
                    metrics.countRetry()
                    lastFailure = "\(url) answered 503"
                    continue
                }
                metrics.countRequest(replica: url, status: Int(response.status.code))
                held = false
                let holding = Holding(url)
                let ticket = Ticket { [self] in
                    replicas.finished(holding.url)
                    lock.withLock { inFlight -= 1 }
                }
                let channel = context.channel
                let resumable = response.status == .ok ? relay : nil
                let triedSoFar = tried
                return Response(status: .init(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase),
                                headers: Self.fields(response.headers), body: ResponseBody { [self] writer in
                    defer { ticket.done() }
                    guard var relay = resumable else {
                        for try await chunk in response.body { try await writer.write(chunk) }
                        return try await writer.finish(nil)
                    }
                    var upstream = response.body.makeAsyncIterator()
                    var failed = triedSoFar
                    while true {
                        let chunk: ByteBuffer?
                        do {
                            chunk = try await upstream.next()
                        } catch {
                            // The replica died mid-stream: go on elsewhere from what was sent.
                            guard !relay.done, !Task.isCancelled, channel.isActive else { break }
                            if relay.finished {
                                // Only the closing events were lost: end the stream here.
                                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                                break
                            }
                            logger.warning("stream from \(holding.url) broke after \(relay.sentTokens.count) tokens (\(error)); resuming on another replica")
                            replicas.markFailed(holding.url)
                            failed.insert(holding.url)
                            let outcome = await resume(request, relay: relay, excluding: &failed, channel: channel)
                            guard case .resumed(let next, let nextURL) = outcome else {
                                if case .refused(let message) = outcome {
                                    try await writer.write(Self.streamError(message))
                                } else if channel.isActive {
                                    try await writer.write(Self.streamError("the replica serving this stream failed and no other could resume it"))
                                }
                                break
                            }
                            replicas.finished(holding.url)
                            holding.url = nextURL
                            relay.switchUpstream()
                            upstream = next.body.makeAsyncIterator()
                            continue
                        }
                        guard let chunk else { break }
                        if let out = relay.feed(chunk) { try await writer.write(out) }
                    }
                    try await writer.finish(nil)
                })
            } catch is CancellationError {
                // The client closed its connection; nobody reads this.
                replicas.finished(url)
                return Self.error(.init(code: 499, reasonPhrase: "Client Closed Request"), "the client closed the connection", type: "invalid_request_error")
            } catch {
                // Nothing reached the client yet: try another replica.
                replicas.finished(url)
                if !Self.isPoolWait(error) { replicas.markFailed(url) }
                metrics.countRetry()
                lastFailure = "\(url) failed: \(error)"
                logger.warning("request to \(url) failed before its first byte (\(error)); retrying on another replica")
            }
        }
        return Self.error(.serviceUnavailable, "no replica could take the request (\(lastFailure))", type: "server_error")
    }

    /// Sends the request to one replica; returns once its head arrives. The client closing
    /// its connection cancels it (and so the replica's work).
    private func forward(_ request: Request, body: ByteBuffer, to base: String, channel: any Channel, tokenIDs: Bool = false) async throws -> HTTPClientResponse {
        var upstream = HTTPClientRequest(url: base + request.uri.description)
        upstream.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) {
            upstream.headers.add(name: field.name.rawName, value: field.value)
        }
        // Only the router asks for token ids: a client's own request for them is not passed on.
        upstream.headers.remove(name: APIServer.tokenIDsHeader)
        if tokenIDs { upstream.headers.add(name: APIServer.tokenIDsHeader, value: "1") }
        upstream.body = .bytes(body)
        let client = self.client
        let pending = PendingForward(Task { try await client.execute(upstream, deadline: .distantFuture) })
        channel.closeFuture.whenComplete { _ in pending.cancel() }
        defer { pending.done() }
        return try await withTaskCancellationHandler { try await pending.value() } onCancel: { pending.cancel() }
    }

    enum Resumption {
        case resumed(HTTPClientResponse, String)
        /// A replica refused the resumed request (4xx): its message, for the client.
        case refused(String)
        case failed
    }

    /// The stream resumed on another replica, from the tokens `relay` has sent. The replica
    /// returned counts as in flight. A replica that refuses the request (4xx) ends the
    /// attempt without being blamed; one that fails is marked failed; a client that left
    /// ends it at once.
    private func resume(_ request: Request, relay: StreamRelay, excluding failed: inout Set<String>, channel: any Channel) async -> Resumption {
        let body = relay.resumeBody()
        let key = RoutingKey.of(relay.request)
        while channel.isActive, let url = replicas.choose(key: key, excluding: failed) {
            failed.insert(url)
            do {
                let response = try await forward(request, body: body, to: url, channel: channel, tokenIDs: true)
                if response.status == .ok {
                    metrics.countResume()
                    return .resumed(response, url)
                }
                replicas.finished(url)
                if (400..<500).contains(Int(response.status.code)) {
                    return .refused(await Self.errorMessage(response))
                }
                replicas.markFailed(url)
            } catch {
                replicas.finished(url)
                if error is CancellationError || !channel.isActive { return .failed }
                if !Self.isPoolWait(error) { replicas.markFailed(url) }
            }
        }
        return .failed
    }

    /// The client's own connection pool was full: the replica is busy, not down.
    static func isPoolWait(_ error: any Error) -> Bool {
        (error as? HTTPClientError) == .getConnectionFromPoolTimeout
    }

    /// The error event and end of a stream the router could not finish.
    static func streamError(_ message: String) -> ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes(APIError(.serviceUnavailable, message, type: "server_error").body)
        buffer.writeString("\n\ndata: [DONE]\n\n")
        return buffer
    }

    static func fields(_ headers: HTTPHeaders) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in headers where !hopByHop.contains(name.lowercased()) {
            if let n = HTTPField.Name(name) { fields.append(HTTPField(name: n, value: value)) }
        }
        return fields
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, type: String) -> Response {
        APIServer.errorResponse(APIError(status, message, type: type))
    }
}

/// A request on its way to a replica, cancellable from the client's connection closing: the
/// callback that does so outlives the request on a kept-alive connection, so it holds this
/// box, which lets go of the request's task once it is done.
final class PendingForward<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var task: Task<Value, Error>?

    init(_ task: Task<Value, Error>) { self.task = task }

    func value() async throws -> Value {
        guard let task = lock.withLock({ task }) else { throw CancellationError() }
        return try await task.value
    }

    func cancel() { lock.withLock { task }?.cancel() }

    func done() { lock.withLock { task = nil } }
}

/// The replica a stream is on (it changes when the stream is resumed elsewhere).
final class Holding: @unchecked Sendable {
    var url: String
    init(_ url: String) { self.url = url }
}

/// What a forwarded request holds until its answer is written: its count in flight, given
/// back once (when the body is done, or when the response is dropped unwritten).
final class Ticket: @unchecked Sendable {
    private let lock = NSLock()
    private var release: (@Sendable () -> Void)?

    init(_ release: @escaping @Sendable () -> Void) { self.release = release }

    func done() {
        let r = lock.withLock { () -> (@Sendable () -> Void)? in
            defer { release = nil }
            return release
        }
        r?()
    }

    deinit { release?() }
}
