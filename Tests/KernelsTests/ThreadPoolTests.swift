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

    func testChunksRunConcurrentlyOnDifferentThreads() {
        let pool = ThreadPool(threads: 2)
        let threads = Mutex<Set<UInt>>([])
        pool.parallelFor(2) { _ in
            let id = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(bitPattern: UInt(pthread_self()))))
            threads.withLock { _ = $0.insert(id) }
        }
        XCTAssertEqual(threads.withLock { $0.count }, 2)
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
}
