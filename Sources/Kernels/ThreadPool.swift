import Foundation
import KernelsC
import Synchronization

/// A fixed set of worker threads for loops over rows, started once and reused for every
/// operation, so the hot path has no thread creation and no Dispatch overhead.
///
/// An operation is cut into a few chunks per thread, shrinking from first to last, and the
/// caller and the workers claim chunks until none are left, so a thread the OS preempts (a
/// server shares its cores with its clients) delays the operation by at most a chunk (the
/// first are about twice the average) instead of stalling it until that thread runs again.
/// Workers spin while work keeps coming (between the operations of a forward pass the gap is
/// microseconds) and park on a condition variable after `spinSeconds` without work.
///
/// Several callers may share one pool (the models of one server, each run by its own
/// engine thread): operations then take turns, first come first served, each with every
/// thread, so one model's burst uses the cores another leaves idle.
public final class ThreadPool: @unchecked Sendable {
    public let threads: Int
    public static let spinSeconds = 0.002
    /// Chunks per thread: enough for the other threads to absorb one that is preempted.
    static let chunksPerThread = 4
    private let state: State
    /// A ticket lock over operations: callers run theirs in the order they arrived.
    private let nextTurn = Atomic<Int>(0)
    private let turn = Atomic<Int>(0)

    /// What the workers share; they hold it strongly, so it outlives the pool's owner.
    final class State: @unchecked Sendable {
        /// Bumped for each operation; workers wait for it to change.
        let generation = Atomic<Int>(0)
        /// The current operation's claims: its number (bits 32 and up), its chunk count
        /// (bits 16...31) and the next unclaimed chunk (bits 0...15). A claim is a
        /// compare-and-swap, so a worker that wakes late can only claim the current
        /// operation's chunks, never a finished one's.
        let ticket = Atomic<Int>(0)
        /// Chunks of the current operation that have finished.
        let finished = Atomic<Int>(0)
        let shuttingDown = Atomic<Bool>(false)
        let lock = NSCondition()
        // Written before `ticket` is stored (release), read after a claim (acquire); not
        // rewritten until every claimed chunk has finished.
        var task: UnsafeRawPointer?
        var count = 0
        var unit = 1
    }

    public init(threads: Int) {
        self.threads = max(1, threads)
        state = State()
        for index in 1..<self.threads {
            let state = self.state
            let thread = Thread { Self.work(state) }
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

    /// Calls `body` with disjoint ranges that together cover `0..<count`, on this thread and
    /// the workers, and returns when all are done. Ranges start at multiples of
    /// `minimumChunk` and hold at least that many indices (except the last).
    public func parallelFor(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let unit = max(minimumChunk, 1)
        let units = (count + unit - 1) / unit
        let chunks = min(units, threads == 1 ? 1 : threads * Self.chunksPerThread, 0xFFFF)
        if chunks == 1 {
            body(0..<count)
            return
        }
        let mine = nextTurn.add(1, ordering: .relaxed).oldValue
        var waited = 0
        while turn.load(ordering: .acquiring) != mine { Self.backOff(&waited) }
        defer { turn.add(1, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            withUnsafePointer(to: body) { pointer in
                state.task = UnsafeRawPointer(pointer)
                state.count = count
                state.unit = unit
                state.finished.store(0, ordering: .relaxed)
                let operation = (state.ticket.load(ordering: .relaxed) >> 32) + 1
                state.ticket.store(operation << 32 | chunks << 16, ordering: .releasing)
                publish()
                Self.claimChunks(state)
                var spins = 0
                while state.finished.load(ordering: .acquiring) < chunks { Self.backOff(&spins) }
                state.task = nil
            }
        }
    }

    private static func work(_ state: State) {
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
            claimChunks(state)
        }
    }

    /// Runs unclaimed chunks of the current operation until there are none.
    private static func claimChunks(_ state: State) {
        while true {
            let ticket = state.ticket.load(ordering: .acquiring)
            let next = ticket & 0xFFFF, chunks = (ticket >> 16) & 0xFFFF
            guard next < chunks else { return }
            guard state.ticket.compareExchange(expected: ticket, desired: ticket + 1, ordering: .acquiringAndReleasing).exchanged else {
                continue
            }
            runChunk(next, of: chunks, state)
            state.finished.add(1, ordering: .releasing)
        }
    }

    /// Spin briefly, then yield the core: with more threads than cores, a pure spin would
    /// hold the core the awaited thread needs.
    @inline(__always)
    private static func backOff(_ spins: inout Int) {
        spins += 1
        if spins < 512 { apus_spin_pause() } else { sched_yield() }
    }

    /// Chunk `index` of `chunks` (never more chunks than units): one unit each, and the units
    /// beyond those shared out linearly falling, chunks - i parts for chunk i, so the chunks
    /// claimed last are small and the threads finish an operation close together. Equal
    /// chunks left one thread idle for up to a chunk at the end of every product; decoding a
    /// token streams the weights of about a hundred products from memory, and on
    /// Qwen2.5-Coder-1.5B it ran 5-6% faster this way (bench/2026-12-07-guided-chunks.md).
    /// With as many units as chunks, each chunk is one unit (one part per thread, as the
    /// probes that time a loop per thread expect).
    @inline(never)
    private static func runChunk(_ index: Int, of chunks: Int, _ state: State) {
        let body = state.task!.assumingMemoryBound(to: ((Range<Int>) -> Void).self)
        let (count, unit) = (state.count, state.unit)
        let units = (count + unit - 1) / unit
        func start(_ i: Int) -> Int {
            min(count, (i + (units - chunks) * (i * chunks - i * (i - 1) / 2) / (chunks * (chunks + 1) / 2)) * unit)
        }
        body.pointee(start(index)..<start(index + 1))
    }
}

/// A value handed to the pool's workers; `parallelFor` joins them before it returns, so the
/// value is never used after the caller's scope ends.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
