import Foundation
import Models
import Tokenizer

/// The serving engine: many requests share each forward pass. The step loop runs on its
/// own thread; each request is an `AsyncThrowingStream` of outputs. A consumer that stops
/// listening (its task cancelled, or the stream dropped) aborts its request, whose blocks
/// are released before the next step. Call `shutdown()` to stop the loop thread.
public final class Engine: @unchecked Sendable {
    public typealias Stream = AsyncThrowingStream<GenerationOutput, Error>

    public let tokenizer: Tokenizer
    public let contextLength: Int
    /// Width of the model's hidden state: an embedding's dimensions.
    public var hiddenWidth: Int { core.model.hiddenWidth }
    /// The shape of the KV-cache blocks, which blocks imported from another worker must share.
    public let kvLayout: KVLayout
    /// Blocks in the KV cache: the most one import can write.
    public var kvBlockCount: Int { core.cache.blockCount }
    private let core: EngineCore

    // Shared with the loop thread, under `condition`.
    private let condition = NSCondition()
    private var arrivals: [(id: UInt64, request: GenerationRequest, continuation: Stream.Continuation)] = []
    private var aborts: [UInt64] = []
    /// Work that must run on the loop thread between steps (it touches the cache).
    private var chores: [(EngineCore) -> Void] = []
    private var nextID: UInt64 = 0
    private var stopping = false
    private var stopped = false
    private var published = EngineStatistics()

    // Owned by the loop thread.
    private var continuations: [UInt64: Stream.Continuation] = [:]

    /// `draftModel` drafts when `configuration.speculation.mode` is `.draft`.
    public init(model: any LanguageModel, tokenizer: Tokenizer, configuration: EngineConfiguration = EngineConfiguration(),
                draftModel: DraftModel? = nil) throws {
        core = try EngineCore(model: model, tokenizer: tokenizer, configuration: configuration, draftModel: draftModel)
        self.tokenizer = tokenizer
        contextLength = core.contextLength
        kvLayout = core.kvLayout
        published = core.currentStatistics()
        // The loop holds the engine until `shutdown()` ends it.
        let thread = Thread { self.loop() }
        thread.name = "apus-engine"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// The model's per-operation timers (enable for `--profile`; sampling is timed too).
    public var operationProfile: OperationProfile { core.model.profile }

    /// Checks a request as `generate` will, without submitting it.
    public func validate(_ request: GenerationRequest) throws { try core.validate(request) }

    /// Submits a request. An invalid request fails its stream with the reason (call
    /// `validate` first to learn it before streaming).
    public func generate(_ request: GenerationRequest) -> Stream {
        let (stream, continuation) = Stream.makeStream()
        condition.lock()
        nextID += 1
        let id = nextID
        condition.unlock()
        // Set before the loop can see the request, and outside the lock: the handler takes it.
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.abort(id) }
        }
        condition.lock()
        guard !stopping else {
            condition.unlock()
            continuation.finish(throwing: EngineError.shutDown)
            return stream
        }
        arrivals.append((id, request, continuation))
        condition.signal()
        condition.unlock()
        return stream
    }

    /// Counters as of the last step; requests submitted since count as waiting.
    public var statistics: EngineStatistics {
        condition.lock()
        defer { condition.unlock() }
        var s = published
        s.waitingSequences += arrivals.reduce(0) { $0 + $1.request.samples }
        return s
    }

    /// Stops the loop: waiting and running requests end with `EngineError.shutDown`. Safe
    /// to call more than once.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.signal()
        while !stopped { condition.wait() }
        condition.unlock()
    }

    /// Writes a prompt's blocks computed by another worker into the cache, between steps,
    /// under their prefix-cache names: a request for that prompt then starts after them.
    /// `earlier`: blocks of the same prompt imported before these.
    public func importKV(_ blocks: [KVBlock], earlier: Int = 0) async throws -> KVImport {
        try await onLoop { core in try core.importBlocks(blocks, earlier: earlier) }
    }

    /// Runs `work` on the loop thread between two steps.
    private func onLoop<T: Sendable>(_ work: @escaping @Sendable (EngineCore) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            guard !stopping else {
                condition.unlock()
                continuation.resume(throwing: EngineError.shutDown)
                return
            }
            chores.append { core in continuation.resume(with: Result { try work(core) }) }
            condition.signal()
            condition.unlock()
        }
    }

    private func abort(_ id: UInt64) {
        condition.lock()
        aborts.append(id)
        condition.signal()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while arrivals.isEmpty && aborts.isEmpty && chores.isEmpty && !core.hasWork && !stopping { condition.wait() }
            let newArrivals = arrivals, newAborts = aborts, newChores = chores
            arrivals = []
            aborts = []
            chores = []
            let stop = stopping
            condition.unlock()

            for a in newArrivals {
                do {
                    try core.add(id: a.id, a.request)
                    continuations[a.id] = a.continuation
                } catch {
                    a.continuation.finish(throwing: error)
                }
            }
            for id in newAborts where core.abort(id: id) {
                continuations.removeValue(forKey: id)?.finish()
            }
            for chore in newChores { chore(core) }
            if !newArrivals.isEmpty || !newAborts.isEmpty || !newChores.isEmpty { publish() }
            if stop {
                for (id, continuation) in continuations {
                    core.abort(id: id)
                    continuation.finish(throwing: EngineError.shutDown)
                }
                continuations = [:]
                publish()
                condition.lock()
                stopped = true
                condition.broadcast()
                condition.unlock()
                return
            }
            do {
                for event in try core.step() {
                    guard let continuation = continuations[event.request] else { continue }
                    if let error = event.error {
                        continuations[event.request] = nil
                        continuation.finish(throwing: error)
                        continue
                    }
                    continuation.yield(event.output)
                    if event.finished {
                        continuations[event.request] = nil
                        continuation.finish()
                    }
                }
            } catch {
                // A failed forward pass is a bug, not bad input: fail every request rather
                // than loop on the same batch.
                for (id, continuation) in continuations {
                    core.abort(id: id)
                    continuation.finish(throwing: error)
                }
                continuations = [:]
            }
            publish()
        }
    }

    private func publish() {
        let s = core.currentStatistics()
        condition.lock()
        published = s
        condition.unlock()
    }
}
