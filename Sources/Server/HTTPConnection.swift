import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// One HTTP/1.1 connection as Apus serves it: Hummingbird's pipeline with the handlers
/// that bound what a client can hold. In order: admission (per-client connection limit)
/// and the first byte of each request, NIO's HTTP/1 codec, `HTTPSemantics` (HTTP/1.0
/// keep-alive, `Expect: 100-continue`, malformed requests answered in JSON), Hummingbird's
/// types, client departure, connection state (graceful shutdown).
struct APIChannel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    let configuration: ServerConfiguration
    let clients: ClientConnections

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let deadlines = ConnectionDeadlines(channel: channel, configuration: configuration, logger: logger)
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(ConnectionAdmission(clients: clients, limit: configuration.maxConnectionsPerClient, deadlines: deadlines))
            var limits = NIOHTTPDecoderLimitConfiguration()
            // The decoder refuses past this; below it, `APIServer` refuses past `maxHeaderBytes`
            // with a message that says how many bytes came.
            limits.maxHeaderListSize = max(configuration.maxHeaderBytes * 2, 64 << 10)
            limits.maxHeaderFieldSize = limits.maxHeaderListSize
            try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: false, withOutboundHeaderValidation: false,
                                                     withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
            try pipeline.addHandler(HTTPSemantics(deadlines: deadlines, maxBodyBytes: configuration.maxBodyBytes, maxHeaderBytes: limits.maxHeaderListSize,
                                                        streamsKVImports: configuration.role.imports))
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try pipeline.addHandler(ClientDeparture())
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: value, logger: logger)
    }
}

/// The clock of one connection. Idle (just opened, or its last response written), a
/// connection is closed after `idleTimeout`; once a request's first byte arrives its head
/// must be complete within `headerTimeout` and its body within `readTimeout` of that byte.
/// While the server answers there is no deadline: generation takes what it takes, and a
/// client that stops reading is bounded by `maxUnsentChunks` instead. A body that streams
/// as its sender computes it (KV blocks from a prefill worker, as long as their prompt
/// takes) gets `readTimeout` for each silence, and 20 times `readTimeout` in all.
final class ConnectionDeadlines {
    enum Phase { case idle, readingHead, readingBody, answering }

    private(set) var phase = Phase.idle
    private var requestStarted = NIODeadline.now()
    private var bodyStreams = false
    private var timer: Scheduled<Void>?
    private let channel: any Channel
    private let idle: TimeAmount, header: TimeAmount, read: TimeAmount
    private let logger: Logger

    init(channel: any Channel, configuration: ServerConfiguration, logger: Logger) {
        self.channel = channel
        idle = .seconds(configuration.idleTimeout)
        header = .seconds(configuration.headerTimeout)
        read = .seconds(configuration.readTimeout)
        self.logger = logger
    }

    func opened() { enter(.idle, after: idle, from: .now(), "no request within") }

    func bytesArrived() {
        guard phase == .idle else { return }
        requestStarted = .now()
        enter(.readingHead, after: header, from: requestStarted, "no complete request head within")
    }

    func headArrived(bodyStreams: Bool = false) {
        if phase == .idle { requestStarted = .now() }
        self.bodyStreams = bodyStreams
        if bodyStreams {
            bodyArrived(entering: true)
        } else {
            enter(.readingBody, after: read, from: requestStarted, "no complete request within")
        }
    }

    func bodyArrived(entering: Bool = false) {
        guard bodyStreams, phase == .readingBody || entering else { return }
        let whole = requestStarted + .nanoseconds(20 * read.nanoseconds), now = NIODeadline.now()
        if now + read < whole {
            enter(.readingBody, after: read, from: now, "no body bytes within")
        } else {
            enter(.readingBody, after: whole - now, from: now, "no complete streamed body within")
        }
    }

    func requestEnded() { enter(.answering, after: nil, from: .now(), "") }

    func responseEnded() { enter(.idle, after: idle, from: .now(), "no request within") }

    func closed() {
        timer?.cancel()
        timer = nil
    }

    /// Enters `phase`, with the connection closed `timeout` after `start` unless it moves on.
    private func enter(_ phase: Phase, after timeout: TimeAmount?, from start: NIODeadline, _ what: String) {
        self.phase = phase
        timer?.cancel()
        timer = nil
        guard let timeout else { return }
        timer = channel.eventLoop.assumeIsolated().scheduleTask(deadline: start + timeout) { [self] in
            logger.debug("closing a connection from \(channel.remoteAddress?.ipAddress ?? "?"): \(what) \(Double(timeout.nanoseconds) / 1e9) s")
            channel.close(promise: nil)
        }
    }
}

extension TimeAmount {
    static func seconds(_ value: Double) -> TimeAmount { .nanoseconds(Int64(max(0, value) * 1e9)) }
}

/// Connections by client address, for `maxConnectionsPerClient`.
final class ClientConnections: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [String: Int] = [:]

    /// Counts a connection from `address` in, unless it already holds `limit`.
    func admit(_ address: String, limit: Int?) -> Bool {
        lock.withLock {
            let held = counts[address, default: 0]
            if let limit, held >= limit { return false }
            counts[address] = held + 1
            return true
        }
    }

    func release(_ address: String) {
        lock.withLock {
            counts[address, default: 1] -= 1
            if counts[address] == 0 { counts[address] = nil }
        }
    }

    var total: Int { lock.withLock { counts.values.reduce(0, +) } }
}

/// First in the pipeline, so it sees raw bytes: refuses a client over its connection limit
/// with a 429 before reading anything, and starts a request's clock at its first byte.
final class ConnectionAdmission: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let clients: ClientConnections
    private let limit: Int?
    private let deadlines: ConnectionDeadlines
    private var admitted: String?

    init(clients: ClientConnections, limit: Int?, deadlines: ConnectionDeadlines) {
        self.clients = clients
        self.limit = limit
        self.deadlines = deadlines
    }

    // An accepted channel may already be active when its pipeline is built (the server
    // bootstrap runs the initializer after accepting), so admission runs on whichever of
    // these comes first, once.
    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { admit(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if admitted == nil && !refused { admit(context) }
        if admitted != nil { context.fireChannelActive() }
    }

    private var refused = false

    private func admit(_ context: ChannelHandlerContext) {
        let address = context.remoteAddress?.ipAddress ?? "unknown"
        guard clients.admit(address, limit: limit) else {
            refused = true
            let error = APIError(.tooManyRequests, "this client already holds \(limit ?? 0) connections, the limit per client",
                                 type: "rate_limit_error", code: "rate_limit_exceeded", retryAfter: 1)
            var response = ByteBuffer(string: "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n")
            response.writeString("Content-Length: \(error.body.count)\r\n\r\n")
            response.writeBytes(error.body)
            context.writeAndFlush(wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return
        }
        admitted = address
        deadlines.opened()
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadlines.closed()
        if let admitted { clients.release(admitted) }
        admitted = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted != nil else { return }
        deadlines.bytesArrived()
        context.fireChannelRead(data)
    }
}

/// HTTP/1 rules Hummingbird leaves out, where the request's version is still known:
/// an HTTP/1.0 request without keep-alive (or any `Connection: close`) is answered, then
/// the connection closed; `Expect: 100-continue` is answered with 100 (or with 413 when
/// the announced body is over the limit, so the client need not send it); a request NIO
/// cannot parse is answered with a JSON error (431 for oversized headers) before the
/// connection closes, instead of a bare 400.
final class HTTPSemantics: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let deadlines: ConnectionDeadlines
    private let maxBodyBytes: Int
    private let maxHeaderBytes: Int
    /// Whether `POST /kv/import` bodies stream (a worker that imports KV blocks).
    private let streamsKVImports: Bool
    private var requestVersion = HTTPVersion.http1_1
    private var closeAfterResponse = false
    private var responding = false
    /// Set once the connection answered on its own; what the client sends after is dropped.
    private var refused = false

    init(deadlines: ConnectionDeadlines, maxBodyBytes: Int, maxHeaderBytes: Int, streamsKVImports: Bool = false) {
        self.deadlines = deadlines
        self.maxBodyBytes = maxBodyBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.streamsKVImports = streamsKVImports
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
        let part = unwrapInboundIn(data)
        switch part {
        case .head(var head):
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            deadlines.headArrived(bodyStreams: streamsKVImports && head.method == .POST && path == APIServer.kvImportPath)
            requestVersion = head.version
            if !head.isKeepAlive {
                // Hummingbird closes after the response when, and only when, it reads this.
                head.headers.replaceOrAdd(name: "connection", value: "close")
                closeAfterResponse = true
            }
            if head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                head.headers.remove(name: "expect")
                if let length = head.headers["content-length"].first.flatMap(Int.init), length > maxBodyBytes {
                    let error = APIError(.contentTooLarge, "the request body is larger than the limit of \(maxBodyBytes) bytes", type: "invalid_request_error")
                    refuse(context: context, status: .payloadTooLarge, error)
                    return
                }
                let informational = HTTPResponseHead(version: head.version, status: .continue)
                context.writeAndFlush(wrapOutboundOut(.head(informational)), promise: nil)
            }
            context.fireChannelRead(wrapInboundOut(.head(head)))
        case .body:
            deadlines.bodyArrived()
            context.fireChannelRead(data)
        case .end:
            deadlines.requestEnded()
            context.fireChannelRead(data)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where head.status.code >= 200:
            responding = true
            head.version = requestVersion
            if closeAfterResponse { head.headers.replaceOrAdd(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            responding = false
            if closeAfterResponse {
                let written = promise ?? context.eventLoop.makePromise()
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                context.write(data, promise: written)
            } else {
                deadlines.responseEnded()
                context.write(data, promise: promise)
            }
        default:
            context.write(data, promise: promise)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parseError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        guard deadlines.phase == .idle || deadlines.phase == .readingHead else {
            // Mid-body: the responder reading the body answers (400), then the connection closes.
            closeAfterResponse = true
            context.fireErrorCaught(error)
            return
        }
        guard !refused, !responding else { return }
        switch parseError {
        case .headerOverflow:
            refuse(context: context, status: .init(statusCode: 431, reasonPhrase: "Request Header Fields Too Large"),
                   APIError(.init(code: 431, reasonPhrase: "Request Header Fields Too Large"),
                            "the request line and headers are longer than the limit of \(maxHeaderBytes) bytes", type: "invalid_request_error"))
        default:
            refuse(context: context, status: .badRequest, APIError.invalidRequest("malformed HTTP request: \(parseError)"))
        }
    }

    /// Answers with `error` and closes; nothing more is read from this connection.
    private func refuse(context: ChannelHandlerContext, status: HTTPResponseStatus, _ error: APIError) {
        refused = true
        var headers = HTTPHeaders([("content-type", "application/json"), ("content-length", "\(error.body.count)"), ("connection", "close")])
        if let seconds = error.retryAfter { headers.add(name: "retry-after", value: "\(seconds)") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: requestVersion, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: error.body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// The most connections open at once: below the process's file-descriptor limit, so that
/// accepting pauses (new clients wait in the listen backlog) instead of failing with
/// EMFILE, and the model, logs and the engine keep descriptors to work with. Reaching it
/// is logged once each time.
struct ConnectionBudget: AvailableConnectionsDelegate {
    let limit: Int
    let logger: Logger
    private var open = 0

    init(limit: Int, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    /// `configured`, else the descriptor limit less what the process needs besides
    /// connections (a quarter, at least 32).
    static func limit(configured: Int?) -> (connections: Int, descriptors: Int?) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < rlim_t(Int32.max) else { return (configured ?? 16384, nil) }
        let descriptors = Int(limit.rlim_cur)
        return (configured ?? max(1, descriptors - max(32, descriptors / 4)), descriptors)
    }

    mutating func connectionOpened() {
        open += 1
        if open == limit {
            logger.warning("\(open) connections open, the limit: new connections wait until one closes (raise it with --max-connections or the file-descriptor limit, ulimit -n)")
        }
    }

    mutating func connectionClosed() { open -= 1 }

    func isAcceptingNewConnections() -> Bool { open < limit }
}

extension APIServer {
    /// The Hummingbird application that serves this responder on `configuration`'s host
    /// and port (`port` overrides it: 0 picks a free one, which `onServerRunning` is told).
    public func application(port: Int? = nil, onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) -> Application<APIServer> {
        Self.application(serving: self, configuration: configuration, logger: logger, port: port, onServerRunning: onServerRunning)
    }

    /// An application serving `responder` with Apus's connection handling (limits,
    /// deadlines, departures): the API server's, and the router's in front of replicas.
    public static func application<R: HTTPResponder>(serving responder: R, configuration: ServerConfiguration, logger: Logger, port: Int? = nil,
                                                     onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) -> Application<R>
    where R.Context == APIRequestContext {
        let (connections, descriptors) = ConnectionBudget.limit(configured: configuration.maxConnections)
        logger.info("at most \(connections) connections at once\(descriptors.map { " (file-descriptor limit \($0))" } ?? "")")
        let clients = ClientConnections()
        let server = HTTPServerBuilder { responder in APIChannel(responder: responder, configuration: configuration, clients: clients) }
        return Application(responder: responder, server: server,
                           configuration: .init(address: .hostname(configuration.host, port: port ?? configuration.port), serverName: "apus",
                                                availableConnectionsDelegate: ConnectionBudget(limit: connections, logger: logger)),
                           onServerRunning: onServerRunning, logger: logger)
    }
}
