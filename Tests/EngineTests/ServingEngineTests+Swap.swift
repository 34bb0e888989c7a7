@testable import Engine
import Foundation
import Models
import TestSupport
import XCTest

/// Preemption under long prompts: a sequence's keys and values go to the swap space (host
/// memory, or the file past it) and come back, or are recomputed when swapping is off;
/// greedy outputs are the same every way, and as without preemption.
extension ServingEngineTests {
    func longGreedyRequests() -> [GenerationRequest] {
        var g = SplitMix64(seed: 11)
        return (0..<6).map { _ in
            var p = GenerationParameters()
            p.sampling = .greedy
            p.maxTokens = 40
            p.ignoreEndOfGeneration = true
            return GenerationRequest(prompt: (0..<Int.random(in: 180...300, using: &g)).map { _ in Int.random(in: 2..<49152, using: &g) }, parameters: p)
        }
    }

    func testPreemptedSequencesComeBackFromSwapWithTheSameTokens() throws {
        let (model, _) = try load()
        let requests = longGreedyRequests()
        let expected = try run(requests, on: try makeCore()).map(\.tokens)
        // 36 blocks of 16: room for about two of the six at a time.
        func small(memory: Int, file: Int) throws -> EngineCore {
            try makeCore {
                $0.kvCacheBytes = 36 * 16 * model.kvBytesPerPosition
                $0.swapMemoryBytes = memory
                $0.swapFileBytes = file
                $0.prefixCaching = false
            }
        }
        var seconds: [String: Double] = [:]
        for (name, memory, file) in [("host memory", 1 << 30, 0), ("file", 0, 1 << 30), ("recompute", 0, 0)] {
            let core = try small(memory: memory, file: file)
            let start = Date()
            let results = try run(requests, on: core)
            seconds[name] = Date().timeIntervalSince(start)
            XCTAssertEqual(results.map(\.tokens), expected, "\(name): every request finishes with the tokens it has without preemption")
            let s = core.currentStatistics()
            XCTAssertGreaterThan(s.preemptions, 0, "\(name): the small cache forced preemption")
            XCTAssertEqual(s.kvBlocksUsed, 0)
            if name == "recompute" {
                XCTAssertEqual(s.swapOuts, 0)
                XCTAssertEqual(s.recomputedPreemptions, s.preemptions)
            } else if name == "host memory" {
                XCTAssertEqual(s.swapOuts, s.preemptions, "\(name): every preempted sequence was swapped out")
                XCTAssertEqual(s.swapIns, s.swapOuts, "\(name): and came back")
                XCTAssertGreaterThan(s.swapBytes, 0)
                XCTAssertGreaterThan(s.swapSecondsSaved, 0, "\(name): copying beat the predicted recompute")
            } else {
                // Each swap weighs the copy rate measured so far against recompute, and one
                // write the disk stalls (85 MB/s once in CI, against ~3 GB/s) rightly turns
                // the rest into recomputes; either way every preempted sequence comes back.
                XCTAssertGreaterThan(s.swapOuts, 0, "\(name): the first preempted sequence was swapped out")
                XCTAssertEqual(s.swapOuts + s.recomputedPreemptions, s.preemptions, "\(name): every preempted sequence was swapped or recomputed")
                XCTAssertEqual(s.swapIns, s.swapOuts, "\(name): and came back")
                XCTAssertGreaterThan(s.swapBytes, 0)
            }
            print(String(format: "%@: %d preemptions, %d swapped, %.1f MB copied in %.3f s, %.2f s of recompute saved (predicted), %.2f s in all",
                         name as NSString, s.preemptions, s.swapOuts, Double(s.swapBytes) / 1e6, s.swapSeconds, s.swapSecondsSaved, seconds[name]!))
        }
    }

    /// A sequence that finishes or is aborted while swapped out leaves nothing behind.
    func testTheSwapSpaceForgetsWhatItDrops() throws {
        let (model, _) = try load()
        let cache = model.makePagedCache(blockSize: 16, blockCount: 8)
        let swap = SwapSpace(memoryBytes: 1 << 20, fileBytes: 0)
        let core = try makeCore()
        try core.add(id: 1, longGreedyRequests()[0])
        let s = try XCTUnwrap(core.scheduler.waiting.first)
        s.computed = 40
        s.blockTable = [3, 5, 1]
        XCTAssertTrue(swap.swapOut(s, cache: cache, prefillTokensPerSecond: nil))
        XCTAssertEqual(swap.positions(of: s), 40)
        swap.drop(s)
        XCTAssertFalse(swap.holds(s))
        // Too short to be worth it at a prefill rate no copy can beat: recomputed.
        XCTAssertFalse(swap.swapOut(s, cache: cache, prefillTokensPerSecond: 1e15))
        XCTAssertEqual(swap.recomputed, 1)
        // Keys and values come back exactly, into other blocks.
        let bytes = cache.bytes(positions: 40)
        XCTAssertEqual(bytes, 2 * cache.layers * 40 * cache.rowWidth * 2, "f16 keys and values")
        let pattern = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 % 977) }
        pattern.withUnsafeBytes { cache.write(table: [3, 5, 1], positions: 40, from: $0.baseAddress!) }
        XCTAssertTrue(swap.swapOut(s, cache: cache, prefillTokensPerSecond: nil))
        XCTAssertEqual(swap.swapIn(s, cache: cache, table: [0, 7, 2]), 40)
        var back = [UInt8](repeating: 0, count: bytes)
        back.withUnsafeMutableBytes { cache.read(table: [0, 7, 2], positions: 40, into: $0.baseAddress!) }
        XCTAssertEqual(back, pattern)
    }
}
