import Engine
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import Tokenizer

/// Settings of the HTTP server (the engine has its own).
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// When set, every endpoint but `/health` needs `Authorization: Bearer <key>`.
    public var apiKey: String?
    public var maxBodyBytes = 4 << 20
    public var maxHeaderBytes = 16 << 10
    /// Sequences waiting in the engine past which new requests get 429.
    public var maxWaitingRequests = 256
    public var limits = OpenAIRequest.Limits()
    /// Seconds between SSE comments sent to keep a stream's connection alive.
    public var keepAliveSeconds: Double = 5
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM; those still running
    /// then are cut (a stream ends with an error event and `[DONE]`, others get 503).
    public var drainSeconds: Double = 30
    /// Seconds a connection may stay open with no request in progress (as llama-server).
    public var idleTimeout: Double = 5
    /// Seconds from a request's first byte to the end of its head.
    public var headerTimeout: Double = 10
    /// Seconds from a request's first byte to the end of its body.
    public var readTimeout: Double = 30
    /// Connections open at once; nil: below the file-descriptor limit (`ConnectionBudget`).
    public var maxConnections: Int?
    /// Connections one client address may hold at once; nil: no limit.
    public var maxConnectionsPerClient: Int?
    /// Stream chunks generated but not yet taken by the client, past which the request is
    /// aborted and its connection closed (a client that stops reading).
    public var maxUnsentChunks = 1024
    /// Whether a request naming a model the server does not serve is refused (404). When
    /// false (the default, as llama-server), the one model serves whatever name a client
    /// sends: `gpt-3.5-turbo`, `openai/my-model`.
    public var strictModelNames = false
    /// Origins browsers may call the API from (`Access-Control-Allow-Origin`); `*`: any.
    public var allowedOrigins = ["*"]
    /// Serve the chat page at `GET /`.
    public var chatPage = true
    /// What the server does with KV blocks in a disaggregated deployment.
    public var role = WorkerRole.both

    public init() {}
}

/// A worker's part in disaggregated prefill and decode (vLLM's kv_producer, kv_consumer and
/// kv_both). Every role serves the whole API; the role says which way KV blocks may flow.
public enum WorkerRole: String, Sendable, CaseIterable {
    /// Computes prompts and ships their blocks (`X-Apus-KV-Export: 1` on a generation request).
    case prefill
    /// Takes blocks in (`POST /kv/import`) and continues their prompts.
    case decode
    /// Both.
    case both

    var exports: Bool { self != .decode }
    var imports: Bool { self != .prefill }
}

/// What the server serves once the model is loaded.
public struct ServedModel: Sendable {
    public let engine: Engine
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate?
    /// The id `/v1/models` lists and answers carry.
    public let name: String
    /// Other names that select this model (`--served-model-name` given more than once).
    public let aliases: [String]
    /// How `/v1/embeddings` pools a prompt's hidden states.
    public let pooling: Pooling
    /// What identifies the weights and arithmetic behind the model's keys and values: KV
    /// blocks from a worker with another identity are refused.
    public let kvIdentity: UInt64

    public init(engine: Engine, tokenizer: Tokenizer, chatTemplate: ChatTemplate?, name: String, aliases: [String] = [], pooling: Pooling = .mean,
                kvIdentity: UInt64 = 0) {
        self.engine = engine
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.name = name
        self.aliases = aliases
        self.pooling = pooling
        self.kvIdentity = kvIdentity
    }

    /// A model id from a file or model name: what clients and Hugging Face repo ids accept
    /// (no spaces: `Smollm2 135M 8k` would break lm-eval's tokenizer lookup).
    public static func slug(_ name: String) -> String {
        let kept = name.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) ? Character($0) : "-" }
        let collapsed = String(kept).split(separator: "-", omittingEmptySubsequences: true).joined(separator: "-")
        return collapsed.isEmpty ? "model" : collapsed
    }
}

/// A request's context: Hummingbird's, plus the connection, whose closing tells a
/// non-streamed generation that nobody is waiting for it any more.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The OpenAI-compatible API on Hummingbird: `/v1/completions`, `/v1/chat/completions`
/// (both streamed as server-sent events or not), `/v1/models`, `/tokenize`,
/// `/detokenize`, `/health`, `/metrics`. Every failure is an OpenAI-shaped error; a client
/// that goes away before its answer is complete, streamed or not, aborts its requests in
/// the engine.
public final class APIServer: HTTPResponder, @unchecked Sendable {
    public typealias Context = APIRequestContext

    enum State {
        case loading
        case ready(ModelPool)
        case draining(ModelPool)
    }

    public let configuration: ServerConfiguration
    public let metrics = ServerMetrics()
    let logger: Logger
    let created = Int(Date().timeIntervalSince1970)
    public static let fingerprint = "apus-1"

    private let lock = NSLock()
    private var state = State.loading
    private var inFlight = 0
    private var nextID: UInt64 = 0
    /// How to cut each request in flight, by id, for the end of a drain.
    private var cuts: [String: @Sendable (APIError) -> Void] = [:]

    public init(configuration: ServerConfiguration, logger: Logger = Logger(label: "apus.server")) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Starts serving the models of `pool` (until then every API call gets 503).
    public func ready(_ pool: ModelPool) {
        lock.withLock { state = .ready(pool) }
    }

    /// Starts serving one model, already loaded.
    public func ready(_ model: ServedModel) { ready(ModelPool(loaded: model)) }

    /// Refuses new work with 503 and waits up to `drainSeconds` for requests in flight;
    /// then cuts those still running, and gives them a moment to say so to their clients.
    public func drain() async {
        lock.withLock {
            if case .ready(let pool) = state { state = .draining(pool) }
        }
        await waitForRequests(seconds: configuration.drainSeconds)
        let running = lock.withLock { Array(cuts.values) }
        guard !running.isEmpty else { return }
        logger.warning("cutting \(running.count) requests still running at the drain deadline")
        let error = APIError.drainCut
        for cut in running { cut(error) }
        await waitForRequests(seconds: 2)
    }

    private func waitForRequests(seconds: Double) async {
        let deadline = Date().addingTimeInterval(seconds)
        while lock.withLock({ inFlight }) > 0 && Date() < deadline {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    /// Registers how to cut request `id`; returns the call that unregisters it.
    private func cuttable(_ id: String, _ cut: @escaping @Sendable (APIError) -> Void) -> () -> Void {
        lock.withLock { cuts[id] = cut }
        return { [self] in _ = lock.withLock { cuts.removeValue(forKey: id) } }
    }

    public var requestsInFlight: Int { lock.withLock { inFlight } }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let started = Date()
        let id = lock.withLock { () -> String in
            nextID += 1
            inFlight += 1
            return String(format: "%08llx%08x", nextID, UInt32.random(in: 0...UInt32.max))
        }
        var log = RequestLog(id: id, method: request.method.rawValue, path: request.uri.path, started: started)
        let crossOrigin = CrossOrigin(allowedOrigins: configuration.allowedOrigins)
        var response: Response
        do {
            if let preflight = crossOrigin.preflight(request) {
                response = preflight
            } else {
                response = try await route(request, channel: context.channel, id: id, log: &log)
            }
        } catch is CancellationError, is ClientDeparted {
            // The client closed the connection; nobody reads this (nginx's status for it).
            response = Self.errorResponse(APIError(.init(code: 499, reasonPhrase: "Client Closed Request"),
                                                   "the client closed the connection", type: "invalid_request_error"))
        } catch {
            let apiError = APIError.from(error) ?? {
                logger.error("request \(id) failed: \(error)")
                return APIError(.internalServerError, "the server failed to answer this request", type: "server_error")
            }()
            response = Self.errorResponse(apiError)
            log.note = log.note ?? apiError.message
        }
        crossOrigin.mark(&response, for: request)
        log.status = Int(response.status.code)
        metrics.countRequest(status: log.status)
        if !log.streamed {
            finish(log)
        }
        return response
    }

    /// One line per request, written when its response is complete.
    struct RequestLog: Sendable {
        let id: String
        let method: String
        let path: String
        let started: Date
        var status = 0
        var streamed = false
        var metrics: RequestMetrics?
        /// Why the request failed, or how a stream that had started was cut.
        var note: String?
        /// The request's hold on its model, released with the last copy of the log.
        var lease: ModelPool.Lease?
    }

    func finish(_ log: RequestLog) {
        lock.withLock { inFlight -= 1 }
        var line = "\(log.id) \(log.method) \(log.path) \(log.status) \(Int(Date().timeIntervalSince(log.started) * 1000)) ms"
        if let m = log.metrics {
            line += String(format: " prompt=%d cached=%d completion=%d queue=%.0fms ttft=%.0fms", m.promptTokens, m.cachedPromptTokens,
                           m.completionTokens, m.queueSeconds * 1000, m.timeToFirstTokenSeconds * 1000)
        }
        if let note = log.note { line += ": \(note)" }
        logger.info("\(line)")
    }

    // MARK: Routing

    private func route(_ request: Request, channel: any Channel, id: String, log: inout RequestLog) async throws -> Response {
        let headerBytes = request.headers.reduce(0) { $0 + $1.name.rawName.utf8.count + $1.value.utf8.count + 4 }
        guard headerBytes <= configuration.maxHeaderBytes else {
            throw APIError(.init(code: 431, reasonPhrase: "Request Header Fields Too Large"),
                           "the request headers take \(headerBytes) bytes, more than the limit of \(configuration.maxHeaderBytes)",
                           type: "invalid_request_error")
        }
        let path = request.uri.path, method = request.method
        if path == "/health" && method == .head {
            var response = health()
            response.body = ResponseBody()
            return response
        }
        if path == "/health" && method == .get { return health() }
        // The page is public, as a static file is; what it calls needs the key.
        if path == "/" && method == .get && configuration.chatPage {
            var headers = HTTPFields()
            headers[HTTPField.Name("Content-Security-Policy")!] = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
            return Self.response(.ok, contentType: "text/html; charset=utf-8", Data(ChatPage.html.utf8), headers: headers)
        }
        try authorize(request)
        switch (method, path) {
        case (.get, "/metrics"):
            let engine = currentPool()?.loaded.first?.engine
            let profile = engine.flatMap { $0.operationProfile.isEnabled ? $0.operationProfile.snapshot() : nil }
            return Self.response(.ok, contentType: "text/plain; version=0.0.4", Data(metrics.exposition(engine: engine?.statistics, profile: profile).utf8))
        case (.get, "/v1/models"):
            let pool = try servingPool()
            return Self.json(.ok, ["object": "list", "data": pool.models.map { modelObject($0.names, status: $0.status, served: $0.served) }])
        case (.get, _) where path.hasPrefix("/v1/models/"):
            let pool = try servingPool()
            let name = String(path.dropFirst("/v1/models/".count)).removingPercentEncoding ?? ""
            guard let found = pool.models.first(where: { $0.names.contains(name) }) else { throw Self.unknownModel(name, known: pool.allNames) }
            return Self.json(.ok, modelObject(found.names, status: found.status, served: found.served))
        case (.post, "/v1/completions"), (.post, "/v1/chat/completions"):
            let body = try await jsonBody(request, channel: channel)
            let model = try await lease(body.model, log: &log)
            let kind: OpenAIRequest.Kind = path == "/v1/completions" ? .completion : .chat
            let prepared = try await prepare { [self] in try prepareGeneration(body, kind: kind, model: model) }
            if request.headers[HTTPField.Name(Self.kvExportHeader)!] == "1" {
                return try exportKV(prepared, model: model, log: &log)
            }
            let tokenIDs = request.headers[HTTPField.Name(Self.tokenIDsHeader)!] == "1"
            return try await generate(prepared, model: model, channel: channel, id: id, log: &log, tokenIDs: tokenIDs)
        case (.post, "/v1/responses"):
            let body = try await jsonBody(request, channel: channel)
            let model = try await lease(body.model, log: &log)
            let prepared = try await prepare { [self] in try prepareResponse(body, model: model) }
            return try await generate(prepared, model: model, channel: channel, id: id, log: &log)
        case (.post, "/v1/embeddings"):
            let body = try await jsonBody(request, channel: channel)
            let model = try await lease(body.model, log: &log)
            let (parsed, requests) = try await prepare { [self] in try prepareEmbeddings(body, model: model) }
            let outputs = try await collect(try submit(requests, to: model), channel: channel, id: id)
            let vectors = outputs.map { $0.compactMap(\.embedding).first ?? [] }
            let taken = outputs.flatMap { $0.compactMap(\.metrics) }
            for m in taken { metrics.record(m) }
            log.metrics = taken.first
            return Self.response(.ok, contentType: "application/json",
                                 EmbeddingsRequest.body(vectors, promptTokens: requests.reduce(0) { $0 + $1.prompt.count }, model: model.name, encoding: parsed.encoding))
        case (.post, Self.kvImportPath):
            return try await importKV(request, channel: channel, log: &log)
        case (.get, "/tokenizer_info"):
            let name = request.uri.queryParameters.get("model")
            return Self.json(.ok, Self.tokenizerInfo(try await lease(name, log: &log)))
        case (.post, "/tokenize"):
            let body = try await jsonBody(request, channel: channel)
            let model = try await lease(body.model, log: &log)
            return try await prepare { try Self.tokenize(body.object, model: model) }
        case (.post, "/detokenize"):
            let body = try await jsonBody(request, channel: channel)
            let model = try await lease(body.model, log: &log)
            return try await prepare { try Self.detokenize(body.object, model: model) }
        default:
            throw APIError(.notFound, "Invalid URL (\(method.rawValue) \(path))", type: "invalid_request_error", code: "not_found")
        }
    }

    private func modelObject(_ names: [String], status: ModelPool.Status, served: ServedModel?) -> [String: Any] {
        ["id": names[0], "object": "model", "created": created, "owned_by": "apus", "aliases": Array(names.dropFirst()), "status": status.rawValue,
         "max_model_len": served.map { $0.engine.contextLength as Any } ?? NSNull()]
    }

    static func unknownModel(_ name: String, known: [String]) -> APIError {
        APIError(.notFound, "The model `\(name)` does not exist. This server serves \(known.map { "`\($0)`" }.joined(separator: ", ")).",
                 type: "invalid_request_error", param: "model", code: "model_not_found")
    }

    /// The model a request names (loaded if it is not), held for as long as `log` lives.
    func lease(_ name: String?, log: inout RequestLog) async throws -> ServedModel {
        let lease = try await servingPool().lease(name, strict: configuration.strictModelNames)
        log.lease = lease
        return lease.model
    }

    private func health() -> Response {
        switch lock.withLock({ state }) {
        case .ready: Self.json(.ok, ["status": "ok", "role": configuration.role.rawValue])
        case .loading: Self.json(.serviceUnavailable, ["status": "loading"])
        case .draining: Self.json(.serviceUnavailable, ["status": "draining"])
        }
    }

    private func currentPool() -> ModelPool? {
        switch lock.withLock({ state }) {
        case .ready(let p), .draining(let p): p
        case .loading: nil
        }
    }

    private func servingPool() throws -> ModelPool {
        switch lock.withLock({ state }) {
        case .ready(let p): return p
        case .loading: throw APIError(.serviceUnavailable, "the model is still loading", type: "server_error", retryAfter: 5)
        case .draining: throw APIError(.serviceUnavailable, "the server is shutting down", type: "server_error", retryAfter: 5)
        }
    }

    /// `Authorization: Bearer <key>` (the scheme in any case, as RFC 9110 says), compared in
    /// constant time so that the key cannot be guessed a byte at a time.
    private func authorize(_ request: Request) throws {
        guard let key = configuration.apiKey else { return }
        guard let header = request.headers[.authorization], !header.isEmpty else {
            throw APIError(.unauthorized, "missing API key: send Authorization: Bearer <key>", type: "invalid_request_error", code: "invalid_api_key")
        }
        guard header.count > 7, header.prefix(7).lowercased() == "bearer " else {
            throw APIError(.unauthorized, "the Authorization header must be `Bearer <key>`", type: "invalid_request_error", code: "invalid_api_key")
        }
        let a = Array(header.utf8.dropFirst(7)), b = Array(key.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<b.count { difference |= (i < a.count ? a[i] : 0) ^ b[i] }
        guard difference == 0 else { throw APIError(.unauthorized, "incorrect API key", type: "invalid_request_error", code: "invalid_api_key") }
    }

    /// The body, up to `maxBodyBytes` (refused at once when `Content-Length` says more). A
    /// client that goes away mid-body has departed (499); a body NIO cannot parse (a bad
    /// chunk size) is the client's error (400).
    private func readBody(_ request: Request, channel: any Channel) async throws -> Data {
        let limit = configuration.maxBodyBytes
        let tooLarge = APIError(.contentTooLarge, "the request body is larger than the limit of \(limit) bytes", type: "invalid_request_error")
        let declared = request.headers[.contentLength].flatMap(Int.init)
        if let declared, declared > limit { throw tooLarge }
        var body = Data()
        do {
            for try await buffer in request.body {
                guard body.count + buffer.readableBytes <= limit else { throw tooLarge }
                body.append(contentsOf: buffer.readableBytesView)
            }
        } catch let error as APIError {
            throw error
        } catch HTTPParserError.invalidEOFState {
            throw ClientDeparted()
        } catch let error as HTTPParserError {
            throw APIError.invalidRequest("malformed HTTP request body: \(error)")
        } catch {
            throw ClientDeparted()
        }
        // The body ends early, without an error, when the connection closes mid-body.
        if let declared, body.count < declared { throw ClientDeparted() }
        if !channel.isActive { throw ClientDeparted() }
        return body
    }

    /// A request body and the JSON object it holds.
    struct JSONBody: @unchecked Sendable {
        let data: Data
        let object: [String: Any]
        /// The model the request names.
        var model: String? { object["model"] as? String }
    }

    /// The body read and parsed (on the preparation queue: it grows with the request).
    private func jsonBody(_ request: Request, channel: any Channel) async throws -> JSONBody {
        let data = try await readBody(request, channel: channel)
        return try await prepare { JSONBody(data: data, object: try Self.jsonObject(data)) }
    }

    /// The body as a JSON object, or an error that says what it is instead.
    static func jsonObject(_ body: Data) throws -> [String: Any] {
        guard String(validating: body, as: UTF8.self) != nil else { throw APIError.invalidRequest("the request body is not valid UTF-8") }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: body, options: .fragmentsAllowed)
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? ""
            // Foundation refuses numbers a Double cannot hold with this message; the JSON is
            // valid, its number out of range.
            if let number = detail.firstMatch(of: /Number (\S+) is not representable/)?.1 {
                throw APIError.invalidRequest("the request body holds the number \(number.prefix(40)), which is out of range")
            }
            throw APIError.invalidRequest("the request body is not valid JSON\(detail.isEmpty ? "" : ": \(detail)")")
        }
        guard let json = object as? [String: Any] else {
            let kind = switch object {
            case is String: "a string"
            case is [Any]: "an array"
            case is NSNull: "null"
            default: OpenAIRequest.isBoolean(object) ? "a boolean" : "a number"
            }
            throw APIError.invalidRequest("the request body must be a JSON object, not \(kind)")
        }
        return json
    }

    /// Fields whose JSON objects keep meaning in their key order (a schema's properties).
    static let orderedFields = ["response_format", "json_schema", "guided_json", "tools"]

    /// The body parsed again with key order kept, only when it carries such a field.
    static func ordered(_ json: [String: Any], body: Data) -> TemplateValue? {
        guard orderedFields.contains(where: { json[$0] != nil && !(json[$0] is NSNull) }) else { return nil }
        return try? TemplateValue(parsingJSON: String(decoding: body, as: UTF8.self))
    }

    /// Work that grows with the request (parsing, rendering the template, tokenizing,
    /// compiling a grammar) runs on this queue, one request at a time: never on the
    /// threads that answer `/health` and write other clients' streams.
    private static let preparation = DispatchQueue(label: "apus.server.preparation")

    private func prepare<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Self.preparation.async { continuation.resume(with: Result { try work() }) }
        }
    }

    /// A generation request parsed, tokenized and validated: ready for the engine.
    struct PreparedGeneration: @unchecked Sendable {
        let parsed: OpenAIRequest
        let requests: [GenerationRequest]
        /// Set when the request came to the Responses API, which answers in its own shape.
        var responses: ResponsesRequest? = nil
    }

    private func prepareGeneration(_ body: JSONBody, kind: OpenAIRequest.Kind, model: ServedModel) throws -> PreparedGeneration {
        let parsed = try OpenAIRequest(json: body.object, kind: kind, limits: configuration.limits, ordered: Self.ordered(body.object, body: body.data))
        let requests = try parsed.generationRequests(tokenizer: model.tokenizer, chatTemplate: {
            guard let template = model.chatTemplate else { throw RequestFieldError(param: "messages", "the model has no chat template (tokenizer.chat_template); send a prompt to /v1/completions instead, or start the server with --chat-template FILE") }
            return template
        }, contextLength: model.engine.contextLength)
        for r in requests { try model.engine.validate(r) }
        return PreparedGeneration(parsed: parsed, requests: requests)
    }

    /// A Responses request, checked as the chat completion it amounts to; errors name the
    /// fields as the Responses API spells them.
    private func prepareResponse(_ body: JSONBody, model: ServedModel) throws -> PreparedGeneration {
        guard let ordered = try? TemplateValue(parsingJSON: String(decoding: body.data, as: UTF8.self)) else {
            throw APIError.invalidRequest("the request body nests too deeply")
        }
        let responses = try ResponsesRequest(json: body.object, ordered: ordered)
        do {
            let chat = Data(responses.chat.json(indent: nil).utf8)
            var prepared = try prepareGeneration(JSONBody(data: chat, object: try Self.jsonObject(chat)), kind: .chat, model: model)
            prepared.responses = responses
            return prepared
        } catch let error as RequestFieldError {
            throw responses.renamed(error)
        }
    }

    private func prepareEmbeddings(_ body: JSONBody, model: ServedModel) throws -> (EmbeddingsRequest, [GenerationRequest]) {
        let parsed = try EmbeddingsRequest(json: body.object)
        let requests = try parsed.generationRequests(tokenizer: model.tokenizer, contextLength: model.engine.contextLength, pooling: model.pooling,
                                                     width: model.engine.hiddenWidth)
        for r in requests { try model.engine.validate(r) }
        return (parsed, requests)
    }

    // MARK: Endpoints

    private static func tokenize(_ json: [String: Any], model: ServedModel) throws -> Response {
        guard let text = (json["prompt"] ?? json["content"]) as? String else {
            throw APIError.invalidRequest("tokenize needs `prompt`, a string", param: "prompt")
        }
        let addSpecial = try OpenAIRequest.bool(json, "add_special_tokens") ?? true
        let tokens = model.tokenizer.encode(text, parseSpecial: true, addSpecial: addSpecial)
        return Self.json(.ok, ["tokens": tokens, "count": tokens.count, "max_model_len": model.engine.contextLength])
    }

    /// vLLM's `/tokenizer_info`: what a client needs to tokenize and template on its own
    /// side through `/tokenize` (lm-eval's `tokenizer_backend=remote`).
    static func tokenizerInfo(_ model: ServedModel) -> [String: Any] {
        let v = model.tokenizer.vocabulary
        func text(_ id: Int?) -> Any { id.map { v.tokens[$0] } ?? NSNull() }
        return ["bos_token": text(v.bos), "eos_token": text(v.eos), "pad_token": text(v.padding), "unk_token": text(v.unknown),
                "add_bos_token": v.addBOS, "add_eos_token": v.addEOS, "vocab_size": v.count, "model_max_length": model.engine.contextLength,
                "chat_template": model.chatTemplate?.source ?? NSNull()]
    }

    private static func detokenize(_ json: [String: Any], model: ServedModel) throws -> Response {
        guard let list = json["tokens"] as? [Any], list.allSatisfy({ $0 is Int && !OpenAIRequest.isBoolean($0) }) else {
            throw APIError.invalidRequest("detokenize needs `tokens`, an array of token ids", param: "tokens")
        }
        let tokens = list as! [Int]
        let vocabulary = model.tokenizer.vocabulary.count
        if let bad = tokens.first(where: { $0 < 0 || $0 >= vocabulary }) {
            throw APIError.invalidRequest("token id \(bad) is outside the vocabulary of \(vocabulary) tokens", param: "tokens")
        }
        return Self.json(.ok, ["prompt": model.tokenizer.decode(tokens)])
    }

    /// A request header asking a stream to name the tokens of each event, in an SSE comment
    /// line (`: apus-token-ids 1 2 3`) before it: what `apus router` needs to resume the
    /// stream elsewhere, stripped before the client sees it.
    public static let tokenIDsHeader = "X-Apus-Token-Ids"
    public static let tokenIDsComment = ": apus-token-ids"

    private func generate(_ prepared: PreparedGeneration, model: ServedModel, channel: any Channel, id: String, log: inout RequestLog,
                          tokenIDs: Bool = false) async throws -> Response {
        let parsed = prepared.parsed, requests = prepared.requests, kind = parsed.kind
        let streams = try submit(requests, to: model)
        let header = Header(id: (kind == .chat ? "chatcmpl-" : "cmpl-") + id, object: kind == .chat ? "chat.completion" : "text_completion",
                            created: Int(Date().timeIntervalSince1970), model: model.name)
        let toolFormat = parsed.usesTools ? model.chatTemplate.flatMap(ToolCallFormat.init(template:)) : nil
        let responses = prepared.responses.map { ResponsesOutput(id: id, created: header.created, model: model.name, request: $0) }
        if parsed.stream, let responses {
            log.streamed = true
            return stream(streams, encoder: ResponsesStreamEncoder(output: responses, toolFormat: toolFormat, tools: Set(parsed.tools.map(\.name))),
                          log: log, channel: channel)
        }
        if parsed.stream {
            log.streamed = true
            let encoder = CompletionStreamEncoder(parsed: parsed, echo: PromptEcho(parsed, requests: requests, tokenizer: model.tokenizer), prompts: streams.count,
                                                  header: header, tokenizer: model.tokenizer, toolFormat: toolFormat)
            return stream(streams, encoder: encoder, log: log, channel: channel, tokenIDs: tokenIDs)
        }
        var collected = Collected(kind: kind, samples: parsed.samples, prompts: requests.count, logprobs: parsed.logprobs != nil)
        collected.echo = PromptEcho(parsed, requests: requests, tokenizer: model.tokenizer)
        collected.toolFormat = toolFormat
        collected.toolNames = Set(parsed.tools.map(\.name))
        for (prompt, outputs) in try await collect(streams, channel: channel, id: id).enumerated() {
            for o in outputs { collected.add(o, prompt: prompt) }
        }
        for m in collected.metrics { metrics.record(m) }
        log.metrics = collected.metrics.first
        let body = responses.map {
            $0.body(text: collected.texts[0], reason: collected.reasons[0], metrics: collected.metrics, toolFormat: toolFormat, tools: collected.toolNames)
        }
        return Self.response(.ok, contentType: "application/json", body ?? collected.body(header: header, tokenizer: model.tokenizer))
    }

    /// Submits `requests` to the model's engine, or refuses with 429 when too many wait.
    func submit(_ requests: [GenerationRequest], to model: ServedModel) throws -> [Engine.Stream] {
        // The check and the submission under one lock: a burst of requests cannot all pass
        // the check before any of them is counted as waiting.
        try lock.withLock { () throws -> [Engine.Stream] in
            guard model.engine.statistics.waitingSequences < configuration.maxWaitingRequests else {
                throw APIError(.tooManyRequests, "too many requests are waiting; retry later", type: "rate_limit_error", code: "rate_limit_exceeded", retryAfter: 1)
            }
            return requests.map { model.engine.generate($0) }
        }
    }

    /// Every output of each engine stream, for a response that is not streamed. A closed
    /// connection (or the server cutting request `id`) cancels the collection, which ends
    /// the engine streams, which abort their requests and free their blocks.
    private func collect(_ streams: [Engine.Stream], channel: any Channel, id: String) async throws -> [[GenerationOutput]] {
        let collecting = Task { () async throws -> [[GenerationOutput]] in
            try await withThrowingTaskGroup(of: (Int, [GenerationOutput]).self) { group in
                for (i, engineStream) in streams.enumerated() {
                    group.addTask {
                        var outputs: [GenerationOutput] = []
                        for try await o in engineStream { outputs.append(o) }
                        try Task.checkCancellation()
                        return (i, outputs)
                    }
                }
                var all = [[GenerationOutput]](repeating: [], count: streams.count)
                for try await (i, outputs) in group { all[i] = outputs }
                return all
            }
        }
        channel.closeFuture.whenComplete { _ in collecting.cancel() }
        let interruption = Interruption()
        let uncut = cuttable(id) { error in
            interruption.error = error
            collecting.cancel()
        }
        defer { uncut() }
        do {
            return try await withTaskCancellationHandler { try await collecting.value } onCancel: { collecting.cancel() }
        } catch {
            throw interruption.error ?? error
        }
    }

    struct Header: Sendable {
        let id: String
        let object: String
        let created: Int
        let model: String
    }

    /// Whole choices of a non-streamed request.
    struct Collected {
        let kind: OpenAIRequest.Kind
        let samples: Int
        let logprobs: Bool
        var texts: [String]
        var logprobEntries: [[TokenLogprobs]]
        var reasons: [FinishReason?]
        var metrics: [RequestMetrics] = []
        /// Set when the output is read for tool calls.
        var toolFormat: ToolCallFormat?
        var toolNames: Set<String> = []
        var echo: PromptEcho?

        init(kind: OpenAIRequest.Kind, samples: Int, prompts: Int, logprobs: Bool) {
            self.kind = kind
            self.samples = samples
            self.logprobs = logprobs
            texts = Array(repeating: "", count: samples * prompts)
            logprobEntries = Array(repeating: [], count: samples * prompts)
            reasons = Array(repeating: nil, count: samples * prompts)
        }

        mutating func add(_ o: GenerationOutput, prompt: Int) {
            let i = prompt * samples + o.index
            texts[i] += o.text
            logprobEntries[i] += o.logprobs
            if let r = o.finishReason { reasons[i] = r }
            if let m = o.metrics { metrics.append(m) }
            if let scored = o.promptLogprobs { echo?.scored[prompt] = scored }
        }

        func body(header: Header, tokenizer: Tokenizer) -> Data {
            let usage = OpenAIResponse.Usage(prompt: metrics.reduce(0) { $0 + $1.promptTokens }, completion: metrics.reduce(0) { $0 + $1.completionTokens },
                                             cached: metrics.reduce(0) { $0 + $1.cachedPromptTokens })
            switch kind {
            case .completion:
                let choices = texts.indices.map { i in
                    let p = i / samples
                    var text = texts[i], offset = 0
                    var lp = OpenAIResponse.CompletionLogprobs()
                    if let echo, let echoed = echo.texts {
                        text = echoed[p] + text
                        (lp, offset) = echo.logprobs(p, tokenizer: tokenizer)
                    }
                    if logprobs { lp.append(OpenAIResponse.completionLogprobs(logprobEntries[i], tokenizer: tokenizer, textOffset: offset)) }
                    var choice = OpenAIResponse.CompletionChoice(index: i, text: text, logprobs: logprobs ? lp : nil, finish_reason: (reasons[i] ?? .length).rawValue)
                    if let echo, echo.promptLogprobs { choice.prompt_logprobs = OpenAIResponse.promptLogprobs(echo.scored[p] ?? [], tokenizer: tokenizer) }
                    return choice
                }
                return OpenAIResponse.encode(OpenAIResponse.Envelope(id: header.id, object: header.object, created: header.created, model: header.model,
                                                                     system_fingerprint: APIServer.fingerprint, choices: choices, usage: usage,
                                                                     timings: OpenAIResponse.Timings(metrics)))
            case .chat:
                let choices = texts.indices.map { i in
                    var message = OpenAIResponse.Message(role: "assistant", content: texts[i])
                    var calls = 0
                    if let toolFormat {
                        let parsed = toolFormat.parse(texts[i], tools: toolNames)
                        message.content = parsed.content
                        if !parsed.calls.isEmpty { message.tool_calls = parsed.calls.map { OpenAIResponse.ToolCall($0) } }
                        calls = parsed.calls.count
                    }
                    let reason = ToolCallFormat.finishReason(reasons[i] ?? .length, calls: calls)
                    return OpenAIResponse.ChatChoice(
                        index: i, message: message,
                        logprobs: logprobs ? OpenAIResponse.chatLogprobs(logprobEntries[i], tokenizer: tokenizer) : nil,
                        finish_reason: reason)
                }
                return OpenAIResponse.encode(OpenAIResponse.Envelope(id: header.id, object: header.object, created: header.created, model: header.model,
                                                                     system_fingerprint: APIServer.fingerprint, choices: choices, usage: usage,
                                                                     timings: OpenAIResponse.Timings(metrics)))
            }
        }
    }

    /// Server-sent events: `encoder`'s events for each engine output, SSE comments as
    /// keep-alives, then its closing events. When the client goes away, the next write
    /// fails, the engine streams are dropped, and the engine aborts the requests before its
    /// next step.
    func stream(_ streams: [Engine.Stream], encoder: some StreamEncoder, log: RequestLog, channel: any Channel, tokenIDs: Bool = false) -> Response {
        let maxUnsent = configuration.maxUnsentChunks
        let keepAlive = UInt64(configuration.keepAliveSeconds * 1e9)
        let body = ResponseBody { [self] writer in
            var log = log
            log.status = 200
            defer { finish(log) }
            let (events, sink) = AsyncStream<StreamEvent>.makeStream()
            let unsent = Unsent()
            let producers = Task {
                await withTaskGroup(of: Void.self) { group in
                    for (i, engineStream) in streams.enumerated() {
                        group.addTask {
                            do {
                                for try await o in engineStream {
                                    guard unsent.add() <= maxUnsent else {
                                        // The client stopped reading: end the generation (leaving
                                        // the loop drops the engine stream, which aborts it) and the
                                        // connection, whose blocked write then fails.
                                        unsent.overflowed = true
                                        channel.close(promise: nil)
                                        return
                                    }
                                    sink.yield(.output(i, o))
                                }
                            } catch {
                                sink.yield(.failed(APIError.from(error) ?? APIError(.internalServerError, "generation failed", type: "server_error")))
                            }
                        }
                    }
                }
                sink.finish()
            }
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: keepAlive)
                    if !Task.isCancelled { sink.yield(.keepAlive) }
                }
            }
            let uncut = cuttable(log.id) { error in sink.yield(.failed(error)) }
            defer {
                uncut()
                producers.cancel()
                ticker.cancel()
                if unsent.overflowed { log.note = "cut: the client took no output for \(maxUnsent) chunks" }
            }
            var encoder = encoder
            for e in encoder.start() { try await writer.write(e) }
            var all: [RequestMetrics] = []
            loop: for await event in events {
                switch event {
                case .keepAlive:
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                case .failed(let error):
                    log.note = "cut: \(error.message)"
                    if tokenIDs && error.isDrainCut {
                        // A router is on the other end, and it resumes a stream whose
                        // connection breaks on another replica: hand the stream off to it.
                        log.note = "handed off at the drain deadline"
                        throw StreamHandedOff()
                    }
                    for e in encoder.fail(error) { try await writer.write(e) }
                    break loop
                case .output(let prompt, let o):
                    unsent.take()
                    if let m = o.metrics {
                        all.append(m)
                        metrics.record(m)
                    }
                    var events = encoder.encode(o, prompt: prompt)
                    if tokenIDs && !o.tokens.isEmpty {
                        // In the same SSE block as the output's last event: the router has passed
                        // every event of the output on when it counts its tokens as sent.
                        var comment = ByteBuffer(string: Self.tokenIDsComment + " " + o.tokens.map(String.init).joined(separator: " ") + "\n")
                        if let last = events.popLast() {
                            comment.writeImmutableBuffer(last)
                        } else {
                            comment.writeString("\n")
                        }
                        events.append(comment)
                    }
                    for e in events { try await writer.write(e) }
                }
            }
            for e in encoder.finish(all) { try await writer.write(e) }
            try await writer.finish(nil)
            log.metrics = all.first
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: Responses

    static func response(_ status: HTTPResponse.Status, contentType: String, _ body: Data, headers extra: HTTPFields = HTTPFields()) -> Response {
        var headers = extra
        headers[.contentType] = contentType
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    public static func json(_ status: HTTPResponse.Status, _ object: [String: Any]) -> Response {
        response(status, contentType: "application/json", try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
    }

    public static func errorResponse(_ error: APIError) -> Response {
        var headers = HTTPFields()
        if let seconds = error.retryAfter { headers[.retryAfter] = "\(seconds)" }
        return response(error.status, contentType: "application/json", error.body, headers: headers)
    }
}

/// What a completion request's answer begins with under `echo`, and the prompt scores
/// vLLM's `prompt_logprobs` asks for, per prompt.
struct PromptEcho: Sendable {
    /// The prompts' texts, as sent (a token prompt decoded); nil without `echo`.
    let texts: [String]?
    let prompts: [[Int]]
    /// Whether choices carry vLLM's `prompt_logprobs`.
    let promptLogprobs: Bool
    /// Each prompt's scores, as they arrive with its first output.
    var scored: [[TokenLogprobs]?]

    init(_ parsed: OpenAIRequest, requests: [GenerationRequest], tokenizer: Tokenizer) {
        prompts = requests.map(\.prompt)
        texts = parsed.echo ? zip(parsed.prompts, prompts).map { prompt, ids in
            if case .text(let text) = prompt { return text }
            return tokenizer.decode(ids)
        } : nil
        promptLogprobs = parsed.promptLogprobs != nil
        scored = Array(repeating: nil, count: requests.count)
    }

    /// The legacy log-probabilities of prompt `p`'s echo, and the text offset after it.
    func logprobs(_ p: Int, tokenizer: Tokenizer) -> (OpenAIResponse.CompletionLogprobs, end: Int) {
        let echoed = OpenAIResponse.echoedLogprobs(prompt: prompts[p], scored: scored[p] ?? [], tokenizer: tokenizer)
        return (echoed, echoed.tokens.reduce(0) { $0 + $1.utf8.count })
    }
}

/// What a stream's writer takes next: an engine output of prompt `Int`, a cut, a keep-alive.
enum StreamEvent: Sendable {
    case output(Int, GenerationOutput)
    case failed(APIError)
    case keepAlive
}

/// The client went away before its request was read to the end (logged and counted as 499).
struct ClientDeparted: Error {}

/// Ends a stream's connection without its closing events, for a router to resume it elsewhere.
struct StreamHandedOff: Error {}

extension APIError {
    /// What a request still running at the drain deadline gets.
    static let drainCut = APIError(.serviceUnavailable, "the server is shutting down; the request was cut at the drain deadline", type: "server_error", retryAfter: 5)

    var isDrainCut: Bool { self == Self.drainCut }
}

/// Why a non-streamed request was cut, set by the drain before it cancels the request.
final class Interruption: @unchecked Sendable {
    private let lock = NSLock()
    private var _error: APIError?
    var error: APIError? {
        get { lock.withLock { _error } }
        set { lock.withLock { _error = newValue } }
    }
}

/// Outputs a stream has generated that its client has not yet taken.
final class Unsent: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private var _overflowed = false

    /// Counts one more in; returns how many are waiting.
    func add() -> Int { lock.withLock { count += 1; return count } }
    func take() { lock.withLock { count -= 1 } }
    var overflowed: Bool {
        get { lock.withLock { _overflowed } }
        set { lock.withLock { _overflowed = newValue } }
    }
}
