import Engine
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GGUF
import Hummingbird
import Logging
import Models
import Server
import TestSupport
import Tokenizer
import XCTest

/// A live server on loopback, driven by the official `openai` Python package
/// (`openai_client_test.py` beside this file; CI installs the package).
final class OpenAIClientTests: XCTestCase {
    static let key = "test-key"
    static let name = "smollm2-test"

    /// Starts `server` on an ephemeral port; returns the port and the running task.
    func start(_ server: APIServer) async throws -> (port: Int, task: Task<Void, Error>) {
        let (ports, sink) = AsyncStream<Int>.makeStream()
        let app = server.application(port: 0, onServerRunning: { channel in sink.yield(channel.localAddress?.port ?? 0) })
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw CocoaError(.featureUnsupported) }
        return (port, task)
    }

    func servedModel(_ model: TestModel = .smolLM2, _ configure: (inout EngineConfiguration) -> Void = { _ in }) throws -> ServedModel {
        let file = try TestSupport.model(model)
        let tokenizer = try Tokenizer(file: file)
        var configuration = EngineConfiguration()
        configuration.contextLength = 2048
        configuration.kvCacheBytes = 64 << 20
        configure(&configuration)
        let engine = try Engine(model: try ModelRegistry.load(file), tokenizer: tokenizer, configuration: configuration)
        return ServedModel(engine: engine, tokenizer: tokenizer, chatTemplate: try ChatTemplate(metadata: file.metadata), name: Self.name)
    }

    func status(_ url: String) async throws -> Int {
        var request = URLRequest(url: URL(string: url)!)
        request.setValue("Bearer \(Self.key)", forHTTPHeaderField: "Authorization")
        let (_, response) = try await URLSession.shared.data(for: request)
        return (response as! HTTPURLResponse).statusCode
    }

    /// The client the script needs, installed with pip when missing, so that the README's
    /// test command is all the set-up the tests need.
    func ensureClient() throws {
        try ensure("openai", "openai==\(Self.clientVersion)")
    }

    /// Installs `package` with pip unless `module` imports.
    func ensure(_ module: String, _ package: String) throws {
        guard try shell(["python3", "-c", "import \(module)"]).status != 0 else { return }
        let (status, output) = try shell(["python3", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", package])
        XCTAssertEqual(status, 0, "installing \(package) failed:\n\(output)")
    }

    static let clientVersion = "3.57.0"
    static let langchainVersion = "1.7.4"
    static let agentsVersion = "0.24.0"

    /// Runs one of the Python scripts beside this file against a live server on `model`.
    func runScript(_ script: String, model: TestModel) async throws {
        var configuration = ServerConfiguration()
        configuration.apiKey = Self.key
        let server = APIServer(configuration: configuration)
        let (port, task) = try await start(server)
        defer { task.cancel() }
        let served = try servedModel(model)
        defer { served.engine.shutdown() }
        server.ready(served)
        let path = TestSupport.packageRoot.appendingPathComponent("Tests/ServerTests/\(script)").path
        let (status, text) = try shell(["python3", path, "--base-url", "http://127.0.0.1:\(port)", "--api-key", Self.key, "--model", Self.name])
        print(text, terminator: "")
        XCTAssertEqual(status, 0, "\(script) failed:\n\(text)")
    }

    /// Runs a suite of the Python script; fails with its output when it fails.
    func runClient(port: Int, suite: String) throws {
        try ensureClient()
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/ServerTests/openai_client_test.py").path
        let (status, text) = try shell(["python3", script, "--base-url", "http://127.0.0.1:\(port)", "--api-key", Self.key, "--model", Self.name, "--suite", suite])
        print(text, terminator: "")
        XCTAssertEqual(status, 0, "openai_client_test.py --suite \(suite) failed:\n\(text)")
    }

    func testTheOfficialClientAgainstALiveServer() async throws {
        var configuration = ServerConfiguration()
        configuration.apiKey = Self.key
        configuration.maxBodyBytes = 1 << 20
        let server = APIServer(configuration: configuration)
        let (port, task) = try await start(server)
        defer { task.cancel() }
        // Listening before the model is ready: health and the API say 503.
        var status = try await self.status("http://127.0.0.1:\(port)/health")
        XCTAssertEqual(status, 503)
        status = try await self.status("http://127.0.0.1:\(port)/v1/models")
        XCTAssertEqual(status, 503)
        let model = try servedModel()
        defer { model.engine.shutdown() }
        server.ready(model)
        status = try await self.status("http://127.0.0.1:\(port)/health")
        XCTAssertEqual(status, 200)
        try runClient(port: port, suite: "main")

        // Draining: new requests get 503, and drain returns once nothing is in flight.
        await server.drain()
        status = try await self.status("http://127.0.0.1:\(port)/health")
        XCTAssertEqual(status, 503)
        XCTAssertEqual(server.requestsInFlight, 0)
    }

    /// Structured output and tool calling with Qwen2.5-Coder-0.5B, through the official
    /// client (`chat.completions.parse` with pydantic models, `tools` streamed and not) and
    /// langchain-openai (`bind_tools`, `with_structured_output`); `structured_client_test.py`.
    func testStructuredOutputAndToolsThroughTheClients() async throws {
        try ensureClient()
        try ensure("langchain_openai", "langchain-openai==\(Self.langchainVersion)")
        try await runScript("structured_client_test.py", model: .qwen05)
    }

    /// `POST /v1/responses` with Qwen2.5-Coder-0.5B through the official client (text,
    /// streams, `responses.parse`, function tools), openai-agents' default model class and
    /// langchain-openai's `use_responses_api`; `responses_client_test.py`.
    func testTheResponsesAPIThroughTheClients() async throws {
        try ensureClient()
        try ensure("langchain_openai", "langchain-openai==\(Self.langchainVersion)")
        try ensure("agents", "openai-agents==\(Self.agentsVersion)")
        try await runScript("responses_client_test.py", model: .qwen05)
    }

    /// The chat page at `/` in headless Chromium (`chat_page_test.py`): the key typed in,
    /// the model listed, two streamed turns equal to the chat completions they amount to,
    /// the server's error shown. CI installs Debian's chromium-headless-shell; elsewhere
    /// the test needs it (or `$APUS_CHROMIUM`) and says so.
    func testTheChatPageInAHeadlessBrowser() async throws {
        let candidates = [ProcessInfo.processInfo.environment["APUS_CHROMIUM"], "/usr/bin/chromium-headless-shell", "/usr/bin/chromium"].compactMap { $0 }
        guard let browser = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("no Chromium: install Debian's chromium-headless-shell (as .ci/run does) or set APUS_CHROMIUM")
        }
        var configuration = ServerConfiguration()
        configuration.apiKey = Self.key
        let server = APIServer(configuration: configuration)
        let (port, task) = try await start(server)
        defer { task.cancel() }
        let served = try servedModel()
        defer { served.engine.shutdown() }
        server.ready(served)
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/ServerTests/chat_page_test.py").path
        let (status, text) = try shell(["python3", script, "--base-url", "http://127.0.0.1:\(port)", "--api-key", Self.key, "--model", Self.name, "--browser", browser])
        print(text, terminator: "")
        XCTAssertEqual(status, 0, "chat_page_test.py failed:\n\(text)")
    }

    static let litellmVersion = "1.110.2"
    static let llmVersion = "0.36"

    /// langchain-openai's ChatOpenAI with its default model name, litellm's `openai/`
    /// models and the `llm` CLI's extra OpenAI models, each configured as its documentation
    /// says for a local server (`other_clients_test.py`).
    func testTheClientsPeoplePointAtALocalServer() async throws {
        try ensureClient()
        try ensure("langchain_openai", "langchain-openai==\(Self.langchainVersion)")
        try ensure("litellm", "litellm==\(Self.litellmVersion)")
        try ensure("llm", "llm==\(Self.llmVersion)")
        try await runScript("other_clients_test.py", model: .smolLM2)
    }

    static let lmEvalVersion = "0.4.13"

    /// lm-eval's `local-completions` (a multiple-choice task scored by log-likelihood, and a
    /// generation task) with `tokenizer_backend=remote`, and `local-chat-completions`, on
    /// tasks from local files (`lm_eval_test.py`). Every number the harness got is
    /// recomputed here without the server: each choice's log-likelihood by teacher forcing
    /// through the plain forward pass, each generation greedily by the single-sequence
    /// generator, each accuracy from those.
    func testLMEvalScoresAreTheModelsOwn() async throws {
        // Its API models need the [api] extra (tenacity, aiohttp), which a bare lm-eval lacks.
        try ensure("lm_eval", "lm-eval[api]==\(Self.lmEvalVersion)")
        try ensure("tenacity", "lm-eval[api]==\(Self.lmEvalVersion)")
        let server = APIServer(configuration: ServerConfiguration())
        let (port, task) = try await start(server)
        defer { task.cancel() }
        let served = try servedModel()
        defer { served.engine.shutdown() }
        server.ready(served)
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("apus-lm-eval-\(port).json")
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/ServerTests/lm_eval_test.py").path
        let (status, text) = try shell(["python3", script, "--base-url", "http://127.0.0.1:\(port)", "--model", Self.name, "--report", report.path])
        guard status == 0 else { return XCTFail("lm_eval_test.py failed:\n\(text)") }
        print(text.split(separator: "\n").last ?? "")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as! [String: Any]

        let file = try TestSupport.model(.smolLM2)
        let model = try ModelRegistry.load(file), tokenizer = served.tokenizer
        func loglikelihood(_ context: [Int], _ continuation: [Int]) throws -> Double {
            let all = context + continuation
            let logits = try model.forward(all, cache: model.makeCache(capacity: all.count), logitRows: (context.count - 1)..<(all.count - 1))
            let v = model.vocabularySize
            return continuation.enumerated().reduce(0.0) { sum, e in sum + Evaluation.logSoftmax(logits[(e.offset * v)..<((e.offset + 1) * v)])[e.element] }
        }
        let mc = json["mc"] as! [String: Any], samples = mc["samples"] as! [[String: Any]]
        var correct = 0
        for (i, sample) in samples.enumerated() {
            let pairs = sample["pairs"] as! [[String: Any]]
            let mine = try pairs.map { try loglikelihood($0["context"] as! [Int], $0["continuation"] as! [Int]) }
            for (pair, ll) in zip(pairs, mine) { XCTAssertEqual(pair["loglikelihood"] as! Double, ll, accuracy: 1e-4, "sample \(i)") }
            let best = mine.indices.max { mine[$0] < mine[$1] }!
            XCTAssertEqual(sample["acc"] as! Double, best == sample["answer"] as! Int ? 1 : 0, "sample \(i)'s accuracy")
            if best == sample["answer"] as! Int { correct += 1 }
        }
        XCTAssertEqual(samples.count, 6)
        XCTAssertEqual(mc["acc"] as! Double, Double(correct) / Double(samples.count), accuracy: 1e-9)
        XCTAssertGreaterThan(correct, 3, "the model knows most capitals; a harness reading no log-likelihoods scores 1 in 4")

        var greedy = GenerationParameters()
        greedy.sampling = .greedy
        greedy.maxTokens = 6
        greedy.stopStrings = ["\n", "."]
        let generator = Generator(model: model, tokenizer: tokenizer, contextLength: 256)
        let gen = json["gen"] as! [String: Any]
        var matches = 0
        for sample in gen["samples"] as! [[String: Any]] {
            let out = try generator.generate(prompt: tokenizer.encode(sample["prompt"] as! String, parseSpecial: true), parameters: greedy).text
            XCTAssertEqual(sample["generation"] as! String, out, "the generation of \(sample["prompt"]!)")
            if out == sample["target"] as! String { matches += 1 }
        }
        XCTAssertEqual(gen["exact_match"] as! Double, Double(matches) / 6, accuracy: 1e-9)

        let chat = json["chat"] as! [String: Any], template = try XCTUnwrap(served.chatTemplate)
        for sample in chat["samples"] as! [[String: Any]] {
            let messages = (sample["messages"] as! [[String: String]]).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
            let prompt = tokenizer.encode(try template.render(messages, tokenizer: tokenizer), parseSpecial: true, addSpecial: false)
            XCTAssertEqual(sample["generation"] as! String, try generator.generate(prompt: prompt, parameters: greedy).text, "the chat generation of \(messages)")
        }
    }

    func testOverloadGets429AndQueuedStreamsKeepAlive() async throws {
        var configuration = ServerConfiguration()
        configuration.apiKey = Self.key
        configuration.maxWaitingRequests = 2
        configuration.keepAliveSeconds = 0.1
        let server = APIServer(configuration: configuration)
        let (port, task) = try await start(server)
        defer { task.cancel() }
        let model = try servedModel(.smolLM2) { $0.maxRunningSequences = 2 }
        defer { model.engine.shutdown() }
        server.ready(model)
        try runClient(port: port, suite: "overload")
    }
}
