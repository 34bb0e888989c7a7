import Foundation
#if canImport(Glibc)
import Glibc
#endif
@testable import Kernels
import Synchronization
import XCTest

final class ThreadPoolTests: XCTestCase {
    /// Every index is visited exactly once, whatever the count, chunking and thread count,
    /// across thousands of back-to-back operations (spinning workers) and after pauses
    /// long enough for them to park.
    func testRangesCoverEveryIndexOnce() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool(threads: threads)
            for round in 0..<2000 {
                let count = (round * 7919) % 97
                let minimumChunk = 1 + round % 5
                let visits = UnsafeMutablePointer<Int>.allocate(capacity: max(count, 1))
                visits.initialize(repeating: 0, count: max(count, 1))
                let box = UncheckedBox(visits)
                pool.parallelFor(count, minimumChunk: minimumChunk) { range in
                    for i in range { box.value[i] += 1 }
                }
                let wrong = (0..<count).filter { visits[$0] != 1 }
                XCTAssertEqual(wrong, [], "threads \(threads) round \(round): indices visited other than once")
                visits.deallocate()
                if round % 500 == 499 { Thread.sleep(forTimeInterval: ThreadPool.spinSeconds * 3) }
            }
        }
    }

    /// No chunk is empty, and with no more items than chunks each chunk is one item: the
    /// probes that time one loop per thread (`parallelFor(threads)`) get one part each.
    func testFewItemsGiveOneItemPerChunk() {
        let pool = ThreadPool(threads: 8)
        for count in 1...64 {
            let ranges = Mutex<[Range<Int>]>([])
            pool.parallelFor(count) { range in ranges.withLock { $0.append(range) } }
            let all = ranges.withLock { $0 }
            XCTAssertTrue(all.allSatisfy { !$0.isEmpty }, "count \(count): \(all)")
            XCTAssertEqual(all.map(\.count).reduce(0, +), count)
            if count <= 32 { XCTAssertEqual(all.count, count, "count \(count): \(all)") }
        }
    }

    /// The worker takes part: the first chunk to start waits for a second thread to start
    /// another (for up to two seconds), which only a worker can do.
    func testChunksRunConcurrentlyOnDifferentThreads() {
        let pool = ThreadPool(threads: 2)
        let threads = Mutex<Set<UInt>>([])
        pool.parallelFor(8) { _ in
            let id = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(bitPattern: UInt(pthread_self()))))
            threads.withLock { _ = $0.insert(id) }
            let deadline = Date().addingTimeInterval(2)
            while threads.withLock({ $0.count }) < 2 && Date() < deadline { sched_yield() }
        }
        XCTAssertEqual(threads.withLock { $0.count }, 2)
    }

    /// Ranges start at multiples of the minimum chunk (row groups of the matrix kernels stay
    /// whole), only the last is shorter than it, and they shrink, roughly, from first to last
    /// (the chunks claimed last are the small ones).
    func testRangesAreAlignedToTheMinimumChunk() {
        let pool = ThreadPool(threads: 3)
        let ranges = Mutex<[Range<Int>]>([])
        pool.parallelFor(1000, minimumChunk: 16) { range in ranges.withLock { $0.append(range) } }
        let sorted = ranges.withLock { $0 }.sorted { $0.lowerBound < $1.lowerBound }
        XCTAssertEqual(sorted.count, 12)
        XCTAssertEqual(sorted.first?.lowerBound, 0)
        XCTAssertEqual(sorted.last?.upperBound, 1000)
        for (a, b) in zip(sorted, sorted.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
        for r in sorted { XCTAssertEqual(r.lowerBound % 16, 0, "\(r)") }
        for r in sorted.dropLast() { XCTAssertGreaterThanOrEqual(r.count, 16, "\(r)") }
        XCTAssertEqual(sorted.map(\.count), [128, 144, 112, 112, 96, 96, 80, 64, 64, 48, 32, 24])
    }

    func testManyPoolsComeAndGo() {
        for _ in 0..<50 {
            let pool = ThreadPool(threads: 4)
            var total = 0
            let box = UncheckedBox(UnsafeMutablePointer<Int>.allocate(capacity: 4))
            box.value.initialize(repeating: 0, count: 4)
            pool.parallelFor(4) { range in box.value[range.lowerBound] = range.count }
            for i in 0..<4 { total += box.value[i] }
            box.value.deallocate()
            XCTAssertEqual(total, 4)
        }
    }

    /// Callers on several threads share one pool (a server's models): each operation still
    /// covers its indices exactly once, and they take turns rather than mixing chunks.
    func testCallersOnManyThreadsShareOnePool() {
        let pool = ThreadPool(threads: 3)
        let callers = 4, rounds = 200, n = 1000
        let failures = UncheckedBox(UnsafeMutablePointer<Int>.allocate(capacity: callers))
        failures.value.initialize(repeating: 0, count: callers)
        DispatchQueue.concurrentPerform(iterations: callers) { caller in
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: n)
            defer { hits.deallocate() }
            let box = UncheckedBox(hits)
            for round in 0..<rounds {
                hits.initialize(repeating: 0, count: n)
                pool.parallelFor(n, minimumChunk: 7) { range in for i in range { box.value[i] += round + 1 } }
                if (0..<n).contains(where: { hits[$0] != round + 1 }) { failures.value[caller] += 1 }
            }
        }
        XCTAssertEqual((0..<callers).map { failures.value[$0] }, [Int](repeating: 0, count: callers))
        failures.value.deallocate()
    }
}
