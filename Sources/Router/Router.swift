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
    public let metrics: RouterMetrics
    let client: HTTPClient
    let logger: Logger
    private let lock = NSLock()
    private var draining = false
    private var inFlight = 0

    /// Headers that belong to one connection, not to the request or answer passed on.
    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"]

    public init(replicas: ReplicaSet, configuration: RouterConfiguration = RouterConfiguration(), logger: Logger = Logger(label: "apus.router")) {
        self.replicas = replicas
        self.configuration = configuration
        self.logger = logger
        metrics = RouterMetrics(urls: replicas.urls)
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.timeout = .init(connect: .milliseconds(Int64(configuration.connectTimeout * 1000)))
        clientConfiguration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 256)
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

    /// One round of health checks, all replicas at once.
    public func checkReplicas() async {
        await withTaskGroup(of: Void.self) { group in
            for (i, url) in replicas.urls.enumerated() {
                group.addTask { [self] in
                    let healthy = await fetch(url + "/health")?.status == 200
                    let gauges = healthy ? await fetch(url + "/metrics").map { Self.gauges($0.text) } ?? [:] : [:]
                    let was = replicas.statuses[i].healthy
                    replicas.update(i, healthy: healthy, gauges: gauges)
                    if was != healthy { logger.info("replica \(url) is \(healthy ? "healthy" : "unhealthy")") }
                }
            }
        }
        metrics.update(replicas)
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
            return Self.json(status, body, head: request.method == .head)
        }
        if path == "/metrics" && request.method == .get {
            metrics.update(replicas)
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
        let key = request.method == .post ? RoutingKey.of(path: path, body: Data(buffer: body)) : []
        var tried = Set<Int>()
        var lastFailure = "no replica is healthy"
        while let r = replicas.choose(key: key, excluding: tried) {
            tried.insert(r)
            let url = replicas.urls[r]
            do {
                let response = try await forward(request, body: body, to: url, channel: context.channel)
                // Draining or still loading: another replica may take it at once.
                if response.status == .serviceUnavailable, replicas.statuses.indices.contains(where: { !tried.contains($0) && replicas.statuses[$0].healthy }) {
                    replicas.markFailed(r)
                    metrics.countRetry()
                    lastFailure = "\(url) answered 503"
                    replicas.finished(r)
                    continue
                }
                metrics.countRequest(replica: url, status: Int(response.status.code))
                held = false
                let ticket = Ticket { [self] in
                    replicas.finished(r)
                    lock.withLock { inFlight -= 1 }
                }
                return Response(status: .init(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase),
                                headers: Self.fields(response.headers), body: ResponseBody { writer in
                    defer { ticket.done() }
                    for try await chunk in response.body { try await writer.write(chunk) }
                    try await writer.finish(nil)
                })
            } catch is CancellationError {
                // The client closed its connection; nobody reads this.
                replicas.finished(r)
                return Self.error(.init(code: 499, reasonPhrase: "Client Closed Request"), "the client closed the connection", type: "invalid_request_error")
            } catch {
                // Nothing reached the client yet: try another replica.
                replicas.finished(r)
                replicas.markFailed(r)
                metrics.countRetry()
                lastFailure = "\(url) failed: \(error)"
                logger.warning("request to \(url) failed before its first byte (\(error)); retrying on another replica")
            }
        }
        return Self.error(.serviceUnavailable, "no replica could take the request (\(lastFailure))", type: "server_error")
    }

    /// Sends the request to one replica; returns once its head arrives. The client closing
    /// its connection cancels it (and so the replica's work).
    private func forward(_ request: Request, body: ByteBuffer, to base: String, channel: any Channel) async throws -> HTTPClientResponse {
        var upstream = HTTPClientRequest(url: base + request.uri.description)
        upstream.method = HTTPMethod(rawValue: request.method.rawValue)
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) {
            upstream.headers.add(name: field.name.rawName, value: field.value)
        }
        upstream.body = .bytes(body)
        let client = self.client
        let task = Task { try await client.execute(upstream, deadline: .distantFuture) }
        channel.closeFuture.whenComplete { _ in task.cancel() }
        return try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }

    static func fields(_ headers: HTTPHeaders) -> HTTPFields {
        var fields = HTTPFields()
        for (name, value) in headers where !hopByHop.contains(name.lowercased()) {
            if let n = HTTPField.Name(name) { fields.append(HTTPField(name: n, value: value)) }
        }
        return fields
    }

    static func json(_ status: HTTPResponse.Status, _ object: [String: Any], head: Bool = false) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: .sortedKeys)) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, type: String) -> Response {
        json(status, ["error": ["message": message, "type": type, "param": NSNull(), "code": NSNull()] as [String: Any]])
    }
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
