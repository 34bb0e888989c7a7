import Foundation
import KernelsC
import Synchronization

/// A fixed set of worker threads for loops over rows, started once and reused for every
/// operation, so the hot path has no thread creation and no Dispatch overhead.
///
/// The caller runs the first chunk itself. Workers spin while work keeps coming (between
/// the operations of a forward pass the gap is microseconds) and park on a condition
/// variable after `spinSeconds` without work. Every worker acknowledges every operation,
/// so the shared job description is never rewritten while a worker may still read it.
public final class ThreadPool: @unchecked Sendable {
    public let threads: Int
    public static let spinSeconds = 0.002
    private let state: State

    /// What the workers share; they hold it strongly, so it outlives the pool's owner.
    final class State: @unchecked Sendable {
        let generation = Atomic<Int>(0)
        let pending = Atomic<Int>(0)
        let shuttingDown = Atomic<Bool>(false)
        let lock = NSCondition()
        // Written before `generation` is bumped (release), read after it is seen (acquire).
        var task: UnsafeRawPointer?
        var count = 0
        var chunks = 0
    }

    public init(threads: Int) {
        self.threads = max(1, threads)
        state = State()
        for index in 1..<self.threads {
            let state = self.state
            let thread = Thread { Self.work(index, state) }
            thread.name = "apus-worker-\(index)"
            thread.start()
        }
    }

    deinit {
        state.shuttingDown.store(true, ordering: .releasing)
        publish()
    }

    private func publish() {
        state.lock.lock()
        state.generation.add(1, ordering: .releasing)
        state.lock.broadcast()
        state.lock.unlock()
    }

    /// Calls `body` with disjoint ranges that together cover `0..<count`, one chunk per
    /// thread (fewer when there is little work), and returns when all are done.
    public func parallelFor(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = max(1, min(threads, count / max(minimumChunk, 1)))
        if chunks == 1 {
            body(0..<count)
            return
        }
        withoutActuallyEscaping(body) { body in
            withUnsafePointer(to: body) { pointer in
                state.task = UnsafeRawPointer(pointer)
                state.count = count
                state.chunks = chunks
                state.pending.store(threads - 1, ordering: .relaxed)
                publish()
                body(0..<(count / chunks))
                var spins = 0
                while state.pending.load(ordering: .acquiring) > 0 { Self.backOff(&spins) }
                state.task = nil
            }
        }
    }

    private static func work(_ index: Int, _ state: State) {
        // Generation 0 is the pool's start; a job may be published before this thread runs.
        var seen = 0
        while true {
            var spins = 0
            var spinStart: UInt64 = 0
            while state.generation.load(ordering: .acquiring) == seen {
                if spins & 1023 == 1023 {
                    let now = DispatchTime.now().uptimeNanoseconds
                    if spinStart == 0 {
                        spinStart = now
                    } else if Double(now - spinStart) > spinSeconds * 1e9 {
                        state.lock.lock()
                        while state.generation.load(ordering: .acquiring) == seen { state.lock.wait() }
                        state.lock.unlock()
                    }
                }
                backOff(&spins)
            }
            seen = state.generation.load(ordering: .acquiring)
            if state.shuttingDown.load(ordering: .acquiring) { return }
            if index < state.chunks { runChunk(index, state) }
            state.pending.subtract(1, ordering: .releasing)
        }
    }

    /// Spin briefly, then yield the core: with more threads than cores, a pure spin would
    /// hold the core the awaited thread needs.
    @inline(__always)
    private static func backOff(_ spins: inout Int) {
        spins += 1
        if spins < 512 { apus_spin_pause() } else { sched_yield() }
    }

    @inline(never)
    private static func runChunk(_ index: Int, _ state: State) {
        let body = state.task!.assumingMemoryBound(to: ((Range<Int>) -> Void).self)
        let (count, chunks) = (state.count, state.chunks)
        body.pointee((count * index / chunks)..<(count * (index + 1) / chunks))
    }
}

/// A value handed to the pool's workers; `parallelFor` joins them before it returns, so the
/// value is never used after the caller's scope ends.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
