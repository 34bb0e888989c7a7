import Engine
import Foundation
import Kernels
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Models
import Server
import TestSupport
import Tokenizer
import XCTest

/// Several models in one server: named routing, loading on first use, unloading the least
/// recently used idle model for room or after its keep-alive, never one a request holds.
final class ModelPoolTests: XCTestCase {
    /// Counts how often each model was loaded.
    final class Loads: @unchecked Sendable {
        private let lock = NSLock()
        private var counts: [String: Int] = [:]
        func add(_ name: String) { lock.withLock { counts[name, default: 0] += 1 } }
        subscript(_ name: String) -> Int { lock.withLock { counts[name] ?? 0 } }
    }

    func entry(_ name: String, _ model: TestModel = .smolLM2, bytes: Int = 100, loads: Loads, delay: Double = 0, workers: ThreadPool? = nil) -> ModelPool.Model {
        ModelPool.Model(names: [name, name + "-alias"], bytes: bytes) {
            loads.add(name)
            if delay > 0 { Thread.sleep(forTimeInterval: delay) }
            let file = try TestSupport.model(model)
            let tokenizer = try Tokenizer(file: file)
            var configuration = EngineConfiguration()
            configuration.contextLength = 256
            configuration.kvCacheBytes = 4 << 20
            let engine = try Engine(model: try ModelRegistry.load(file, options: ModelOptions(pool: workers)), tokenizer: tokenizer, configuration: configuration)
            return ServedModel(engine: engine, tokenizer: tokenizer, chatTemplate: try ChatTemplate(metadata: file.metadata), name: name)
        }
    }

    func status(_ pool: ModelPool) -> [String] { pool.models.map { "\($0.names[0]) \($0.status.rawValue)" } }

    func assertRefuses(_ pool: ModelPool, _ name: String, status: Int, containing text: String, file: StaticString = #filePath, line: UInt = #line) async {
        do {
            _ = try await pool.lease(name, strict: false)
            XCTFail("\(name) was leased", file: file, line: line)
        } catch let error as APIError {
            XCTAssertEqual(Int(error.status.code), status, file: file, line: line)
            XCTAssertTrue(error.message.contains(text), "\(error.message)", file: file, line: line)
        } catch {
            XCTFail("\(error)", file: file, line: line)
        }
    }

    func testModelsLoadOnFirstUseAndTheLeastRecentlyUsedIdleOneMakesRoom() async throws {
        let loads = Loads()
        var limits = ModelPool.Limits()
        limits.maxLoaded = 2
        limits.roomWaitSeconds = 1
        let pool = try ModelPool([entry("a", loads: loads), entry("b", .qwen05, loads: loads), entry("c", loads: loads)], limits: limits)
        defer { pool.shutdown() }
        XCTAssertEqual(status(pool), ["a unloaded", "b unloaded", "c unloaded"])

        // Names: the first without one, an alias, 404 listing every name for another.
        var a: ModelPool.Lease? = try await pool.lease(nil, strict: false)
        XCTAssertEqual(a?.model.name, "a")
        let b = try await pool.lease("b-alias", strict: false)
        XCTAssertEqual(b.model.name, "b")
        await assertRefuses(pool, "gpt-3.5-turbo", status: 404, containing: "`a`, `a-alias`, `b`, `b-alias`, `c`, `c-alias`")
        XCTAssertEqual(status(pool), ["a loaded", "b loaded", "c unloaded"])

        // Both loaded models are held: c waits for room, gets none, and nothing is unloaded for it.
        await assertRefuses(pool, "c", status: 503, containing: "c cannot load now: a, b are serving requests")
        XCTAssertEqual(status(pool), ["a loaded", "b loaded", "c unloaded"])
        XCTAssertEqual([a?.model.name, b.model.name], ["a", "b"], "both leases are held until here")

        // A request for c waits; a's release makes a the idle one, so c takes its place; b, held, stays.
        var waiting: Task<ModelPool.Lease, Error>? = Task { try await pool.lease("c", strict: false) }
        try await Task.sleep(nanoseconds: 100_000_000)
        XCTAssertEqual(status(pool), ["a loaded", "b loaded", "c unloaded"])
        a = nil
        let c = try await waiting!.value
        waiting = nil // a finished task keeps its value, the lease, while it lives
        XCTAssertEqual(c.model.name, "c")
        XCTAssertEqual(status(pool), ["a unloaded", "b loaded", "c loaded"])

        // A loaded model is leased again without loading; a comes back when asked.
        let again = try await pool.lease("b", strict: false)
        XCTAssertTrue(again.model.engine === b.model.engine)
        XCTAssertEqual(loads["b"], 1)
        _ = consume c
        let back = try await pool.lease("a", strict: false)
        XCTAssertEqual(back.model.name, "a")
        XCTAssertEqual(loads["a"], 2)
        XCTAssertEqual(status(pool), ["a loaded", "b loaded", "c unloaded"])
    }

    func testTheMemoryBudgetKeepAliveAndOneLoadForManyWaiters() async throws {
        let loads = Loads()
        var limits = ModelPool.Limits()
        limits.memoryBytes = 150
        limits.keepAlive = 0.2
        limits.roomWaitSeconds = 0.2
        let pool = try ModelPool([entry("a", loads: loads, delay: 0.3), entry("b", loads: loads)], limits: limits)
        defer { pool.shutdown() }

        // Requests that arrive while a loads wait for the same load.
        let leases = try await withThrowingTaskGroup(of: ModelPool.Lease.self) { group in
            for _ in 0..<4 { group.addTask { try await pool.lease("a", strict: false) } }
            var all: [ModelPool.Lease] = []
            for try await l in group { all.append(l) }
            return all
        }
        XCTAssertEqual(loads["a"], 1)
        XCTAssertEqual(Set(leases.map { ObjectIdentifier($0.model.engine) }).count, 1)

        // 100 + 100 bytes is past the budget of 150: b waits for a's room.
        await assertRefuses(pool, "b", status: 503, containing: "b cannot load now")
        _ = consume leases
        // Held through the check: a dropped lease starts b's 0.2 s keep-alive at once.
        let b = try await pool.lease("b", strict: false)
        XCTAssertEqual(status(pool), ["a unloaded", "b loaded"])
        _ = consume b

        // Idle past its keep-alive, b unloads by itself.
        try await Task.sleep(nanoseconds: 800_000_000)
        XCTAssertEqual(status(pool), ["a unloaded", "b unloaded"])

        XCTAssertThrowsError(try ModelPool([entry("big", bytes: 200, loads: loads)], limits: limits)) {
            XCTAssertTrue(($0 as? APIError)?.message.contains("more than the memory budget") == true, "\($0)")
        }
        XCTAssertThrowsError(try ModelPool([entry("x", loads: loads), entry("x", loads: loads)])) {
            XCTAssertEqual(($0 as? APIError)?.message, "two models are named x; give one of them another name")
        }
    }

    /// A live server on `pool`; returns its port and the task that runs it.
    func serve(_ pool: ModelPool) async throws -> (port: Int, task: Task<Void, Error>) {
        let server = APIServer(configuration: ServerConfiguration())
        let (ports, sink) = AsyncStream<Int>.makeStream()
        let app = server.application(port: 0, onServerRunning: { sink.yield($0.localAddress?.port ?? 0) })
        let task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        let port = await iterator.next() ?? 0
        server.ready(pool)
        return (port, task)
    }

    static func call(_ port: Int, _ path: String, _ body: [String: Any]? = nil) async throws -> (Int, [String: Any]) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        if let body {
            request.httpMethod = "POST"
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as! HTTPURLResponse).statusCode, try JSONSerialization.jsonObject(with: data) as! [String: Any])
    }

    /// The model that answered and its text, or the error.
    static func complete(_ port: Int, _ model: String) async throws -> String {
        let (code, body) = try await call(port, "/v1/completions", ["model": model, "prompt": "def add(a, b):", "max_tokens": 6, "temperature": 0])
        guard code == 200, let text = (body["choices"] as? [[String: Any]])?.first?["text"] as? String else { return "\(code) \(body)" }
        return "\(body["model"]!): \(text)"
    }

    /// With room for one model, requests alternating between two all succeed, each model
    /// loading as the other unloads; with room for both, requests to both at once do, the
    /// two models sharing one set of worker threads, with the same tokens as alone.
    func testAlternatingAndConcurrentRequestsToTwoModels() async throws {
        let loads = Loads()
        var limits = ModelPool.Limits()
        limits.maxLoaded = 1
        let one = try ModelPool([entry("smol", loads: loads), entry("qwen", .qwen05, loads: loads)], limits: limits)
        defer { one.shutdown() }
        let (port, task) = try await serve(one)
        defer { task.cancel() }
        var alone: [String: String] = [:]
        for model in ["smol", "qwen", "smol", "qwen"] {
            let answered = try await Self.complete(port, model)
            XCTAssertTrue(answered.hasPrefix(model + ": "), answered)
            XCTAssertEqual(alone[model, default: answered], answered)
            alone[model] = answered
        }
        XCTAssertEqual([loads["smol"], loads["qwen"]], [2, 2])

        let workers = ThreadPool(threads: 2)
        let both = try ModelPool([entry("smol2", loads: loads, workers: workers), entry("qwen2", .qwen05, loads: loads, workers: workers)])
        defer { both.shutdown() }
        let (port2, task2) = try await serve(both)
        defer { task2.cancel() }
        let answers = try await withThrowingTaskGroup(of: String.self) { group in
            for model in ["smol2", "qwen2", "smol2", "qwen2"] { group.addTask { try await Self.complete(port2, model) } }
            var all: [String] = []
            for try await a in group { all.append(a) }
            return all
        }
        let expected = [alone["qwen"]!, alone["qwen"]!, alone["smol"]!, alone["smol"]!].map { $0.replacingOccurrences(of: ": ", with: "2: ", range: $0.range(of: ": ")) }
        XCTAssertEqual(answers.sorted(), expected.sorted())
        XCTAssertEqual([loads["smol2"], loads["qwen2"]], [1, 1])
    }

    /// Over HTTP: `/v1/models` lists every model with its state, a request goes to the
    /// model it names and loads it, an unknown name is 404.
    func testTheServerRoutesByName() async throws {
        let loads = Loads()
        let pool = try ModelPool([entry("smol", loads: loads), entry("qwen", .qwen05, loads: loads)])
        defer { pool.shutdown() }
        let (port, task) = try await serve(pool)
        defer { task.cancel() }
        func call(_ path: String, _ body: [String: Any]? = nil) async throws -> (Int, [String: Any]) { try await Self.call(port, path, body) }
        func states() async throws -> [String] {
            let (_, list) = try await call("/v1/models")
            return (list["data"] as! [[String: Any]]).map { "\($0["id"]!) \($0["status"]!)" }
        }
        var listed = try await states()
        XCTAssertEqual(listed, ["smol unloaded", "qwen unloaded"])
        let (code, completion) = try await call("/v1/completions", ["model": "qwen", "prompt": "def add(a, b):", "max_tokens": 3, "temperature": 0])
        XCTAssertEqual(code, 200)
        XCTAssertEqual(completion["model"] as? String, "qwen")
        listed = try await states()
        XCTAssertEqual(listed, ["smol unloaded", "qwen loaded"])
        let (one, described) = try await call("/v1/models/qwen-alias")
        XCTAssertEqual(one, 200)
        XCTAssertEqual(described["max_model_len"] as? Int, 256)
        let (missing, error) = try await call("/v1/chat/completions", ["model": "llama", "messages": [["role": "user", "content": "hi"]]])
        XCTAssertEqual(missing, 404)
        XCTAssertEqual((error["error"] as? [String: Any])?["code"] as? String, "model_not_found")
        let (tokenized, ids) = try await call("/tokenize", ["model": "smol", "prompt": "The capital of France is"])
        XCTAssertEqual(tokenized, 200)
        XCTAssertEqual(ids["tokens"] as? [Int], [504, 3575, 282, 4649, 314])
        listed = try await states()
        XCTAssertEqual(listed, ["smol loaded", "qwen loaded"])
    }
}
