import Foundation
import Logging

/// The models one server serves (Ollama's model, AlpaServe's colocation): each loads on
/// first use, within `maxLoaded` models and `memoryBytes` of weights and KV cache, and
/// unloads when it has been idle for `keepAlive` or when another model needs its room,
/// least recently used first. A request holds a `Lease` on its model for as long as it
/// runs (a stream: until its last byte), and a leased model is never unloaded: a request
/// for a model that has no room waits (up to `roomWaitSeconds`) for a lease to end.
public final class ModelPool: @unchecked Sendable {
    /// A model the pool can serve.
    public struct Model: Sendable {
        /// Its id, then its aliases: the names `model` may carry.
        public let names: [String]
        /// Memory it takes while loaded: weights and KV cache.
        public let bytes: Int
        public let load: @Sendable () throws -> ServedModel

        public init(names: [String], bytes: Int, load: @escaping @Sendable () throws -> ServedModel) {
            precondition(!names.isEmpty, "a model has a name")
            self.names = names
            self.bytes = bytes
            self.load = load
        }
    }

    public struct Limits: Sendable {
        public var maxLoaded = 3
        /// Memory for every loaded model together; nil: no limit.
        public var memoryBytes: Int? = nil
        /// Idle seconds before a model unloads; nil: never.
        public var keepAlive: Double? = nil
        /// How long a request waits for room for its model before it gets 503.
        public var roomWaitSeconds = 60.0

        public init() {}
    }

    /// What `/v1/models` shows of a model.
    public enum Status: String, Sendable { case unloaded, loading, loaded }

    fileprivate final class Slot: @unchecked Sendable {
        let model: Model
        var served: ServedModel?
        var waiters: [CheckedContinuation<ServedModel?, Error>]?
        /// A model taken out of service whose engine is being stopped.
        var unloading: ServedModel?
        var leases = 0
        var lastUsed = Date()

        init(model: Model) { self.model = model }

        var status: Status { served != nil ? .loaded : waiters != nil ? .loading : .unloaded }
    }

    public let limits: Limits
    private let logger: Logger
    private let slots: [Slot]
    private let lock = NSLock()
    private var stopped = false
    private var sweeper: Task<Void, Never>?

    /// Checks that each model fits alone and that no two share a name.
    public init(_ models: [Model], limits: Limits = Limits(), logger: Logger = Logger(label: "apus.models")) throws {
        precondition(!models.isEmpty, "a pool serves at least one model")
        var seen = Set<String>()
        for m in models {
            if let budget = limits.memoryBytes, m.bytes > budget {
                throw APIError(.internalServerError, "\(m.names[0]) needs \(Self.format(m.bytes)), more than the memory budget of \(Self.format(budget))", type: "server_error")
            }
            for name in m.names where !seen.insert(name).inserted {
                throw APIError(.internalServerError, "two models are named \(name); give one of them another name", type: "server_error")
            }
        }
        guard limits.maxLoaded >= 1 else { throw APIError(.internalServerError, "at least one model must be allowed to load", type: "server_error") }
        self.limits = limits
        self.logger = logger
        slots = models.map(Slot.init)
        if let keepAlive = limits.keepAlive {
            sweeper = Task.detached { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: UInt64(max(0.05, min(keepAlive / 4, 5)) * 1e9))
                    self?.unloadIdle(olderThan: keepAlive)
                }
            }
        }
    }

    /// A pool of one model that is already loaded.
    public convenience init(loaded model: ServedModel) {
        try! self.init([Model(names: [model.name] + model.aliases, bytes: 0, load: { model })])
        slots[0].served = model
    }

    deinit { sweeper?.cancel() }

    /// Every model's names and state, in the order given.
    public var models: [(names: [String], status: Status, served: ServedModel?)] {
        lock.withLock { slots.map { ($0.model.names, $0.status, $0.served) } }
    }

    /// The loaded models.
    public var loaded: [ServedModel] { lock.withLock { slots.compactMap(\.served) } }

    public var allNames: [String] { slots.flatMap(\.model.names) }

    /// The model a request naming `name` gets: the first when it names none; the only one
    /// whatever it names, unless `strict`; otherwise the one with that name, or 404.
    private func slot(named name: String?, strict: Bool) throws -> Slot {
        guard let name else { return slots[0] }
        if let s = slots.first(where: { $0.model.names.contains(name) }) { return s }
        if slots.count == 1 && !strict { return slots[0] }
        throw APIServer.unknownModel(name, known: allNames)
    }

    /// The model for `name`, loaded if it is not (making room first, waiting for it while
    /// the loaded models all serve requests), held until the lease is released.
    public func lease(_ name: String?, strict: Bool) async throws -> Lease {
        let slot = try slot(named: name, strict: strict)
        let deadline = Date().addingTimeInterval(limits.roomWaitSeconds)
        while true {
            if let lease = try await lease(slot) { return lease }
            guard Date() < deadline else {
                let busy = lock.withLock { slots.filter { $0.status != .unloaded }.map { $0.model.names[0] }.joined(separator: ", ") }
                throw APIError(.serviceUnavailable, "\(slot.model.names[0]) cannot load now: \(busy) are serving requests and leave no room; retry later",
                               type: "server_error", retryAfter: 5)
            }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    /// A lease on `slot`; nil when it is not loaded and nothing can make room for it now.
    private func lease(_ slot: Slot) async throws -> Lease? {
        let served: ServedModel? = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ServedModel?, Error>) in
            var evicted: [Slot] = []
            var startLoad = false
            let result: Result<ServedModel?, Error>? = lock.withLock {
                if stopped { return .failure(APIError(.serviceUnavailable, "the server is shutting down", type: "server_error", retryAfter: 5)) }
                if let served = slot.served {
                    slot.leases += 1
                    slot.lastUsed = Date()
                    return .success(served)
                }
                if slot.waiters != nil {
                    slot.waiters!.append(continuation)
                    return nil
                }
                guard let room = makeRoom(for: slot) else { return .success(nil) }
                evicted = room
                slot.waiters = [continuation]
                startLoad = true
                return nil
            }
            for s in evicted { unload(s.model.names[0], evicted: s, why: "to make room for \(slot.model.names[0])") }
            if let result { continuation.resume(with: result) }
            if startLoad { load(slot) }
        }
        return served.map { Lease(pool: self, slot: slot, model: $0) }
    }

    /// Unloads idle models, least recently used first, until `slot` fits; under the lock.
    /// Returns the slots unloaded (their engines still to stop), or nil, unloading none,
    /// when the models that serve requests leave no room.
    private func makeRoom(for slot: Slot) -> [Slot]? {
        func fits() -> Bool {
            let active = slots.filter { $0.status != .unloaded }
            let bytes = active.reduce(0) { $0 + $1.model.bytes } + slot.model.bytes
            return active.count < limits.maxLoaded && limits.memoryBytes.map { bytes <= $0 } ?? true
        }
        let idle = slots.filter { $0.served != nil && $0.leases == 0 }.sorted { $0.lastUsed < $1.lastUsed }
        var kept = idle[...]
        var evicted: [Slot] = []
        while !fits(), let candidate = kept.popFirst() {
            evicted.append(candidate)
            candidate.unloading = candidate.served
            candidate.served = nil
        }
        guard fits() else {
            // Nothing is unloaded after all: what could not make room stays.
            for s in evicted { (s.served, s.unloading) = (s.unloading, nil) }
            return nil
        }
        return evicted
    }

    /// Stops the engine of a slot taken out of service under the lock.
    private func unload(_ name: String, evicted slot: Slot, why: String) {
        guard let served = lock.withLock({ () -> ServedModel? in defer { slot.unloading = nil }; return slot.unloading }) else { return }
        let started = Date()
        served.engine.shutdown()
        logger.info("unloaded \(name) \(why) (\(String(format: "%.2f", Date().timeIntervalSince(started))) s)")
    }

    private func load(_ slot: Slot) {
        Thread.detachNewThread { [self] in
            let started = Date()
            let result = Result { try slot.model.load() }
            if case .success = result {
                logger.info("loaded \(slot.model.names[0]) in \(String(format: "%.2f", Date().timeIntervalSince(started))) s")
            }
            let waiters: [CheckedContinuation<ServedModel?, Error>] = lock.withLock {
                let waiters = slot.waiters ?? []
                slot.waiters = nil
                if case .success(let served) = result {
                    slot.served = served
                    slot.leases += waiters.count
                    slot.lastUsed = Date()
                }
                return waiters
            }
            let outcome = result.map { Optional($0) }.mapError { error -> Error in
                APIError(.internalServerError, "\(slot.model.names[0]) failed to load: \(error)", type: "server_error")
            }
            for w in waiters { w.resume(with: outcome) }
        }
    }

    fileprivate func release(_ slot: Slot) {
        lock.withLock {
            slot.leases -= 1
            slot.lastUsed = Date()
        }
    }

    /// Unloads every model idle for `seconds` or more.
    func unloadIdle(olderThan seconds: Double) {
        let now = Date()
        let idle: [Slot] = lock.withLock {
            slots.filter { $0.served != nil && $0.leases == 0 && now.timeIntervalSince($0.lastUsed) >= seconds }.map { slot in
                (slot.unloading, slot.served) = (slot.served, nil)
                return slot
            }
        }
        for s in idle { unload(s.model.names[0], evicted: s, why: "idle for \(Int(seconds)) s") }
    }

    /// Refuses new leases and stops every loaded engine.
    public func shutdown() {
        sweeper?.cancel()
        let all: [ServedModel] = lock.withLock {
            stopped = true
            defer { for s in slots { s.served = nil } }
            return slots.compactMap(\.served)
        }
        for m in all { m.engine.shutdown() }
    }

    static func format(_ bytes: Int) -> String { String(format: "%.2f GiB", Double(bytes) / Double(1 << 30)) }

    /// A request's hold on its model; released when the last copy of it goes.
    public final class Lease: @unchecked Sendable {
        private let pool: ModelPool
        private let slot: Slot
        public let model: ServedModel

        fileprivate init(pool: ModelPool, slot: Slot, model: ServedModel) {
            self.pool = pool
            self.slot = slot
            self.model = model
        }

        deinit { pool.release(slot) }
    }
}
