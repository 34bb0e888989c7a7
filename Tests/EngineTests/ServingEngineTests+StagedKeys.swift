@testable import Engine
import Kernels
import Models
import TestSupport
import XCTest

/// Q4_0 keys with each open block's keys staged in f16 (the block a query reads unrounded)
/// keep the batch-invariance promise everywhere a block's life can take it: among other
/// requests, through the prefix cache and copy-on-write of parallel samples, in token trees'
/// branches, swapped out (whole blocks; the open block's positions are computed again) and
/// exported to another worker (whole blocks; the receiver computes the rest). No block keeps
/// staged keys once its holders are done.
extension ServingEngineTests {
    func testStagedQ4_0KeysGiveTheSameTokensEveryWay() throws {
        let golden = try goldenRequests(maxTokens: 20)
        let tokenizer = try load().tokenizer
        let model = try ModelRegistry.load(try TestSupport.model(), options: ModelOptions(kvType: KVCacheType(.q4_0)))
        func core(_ configure: (inout EngineConfiguration) -> Void = { _ in }) throws -> EngineCore {
            var c = EngineConfiguration()
            c.contextLength = 2048
            configure(&c)
            return try EngineCore(model: model, tokenizer: tokenizer, configuration: c)
        }
        XCTAssertTrue(try core().cache.stagesKeys)
        let alone = try checkStagedKeys(golden, model: model, tokenizer: tokenizer) { try core() }
        func check(_ name: String, _ results: [Finished]) { checkTokens(name, results, alone) }

        let tree = try core { $0.speculation.mode = .ngram; $0.speculation.treeWidth = 4 }
        check("token trees", try run(golden, on: tree))
        XCTAssertGreaterThan(tree.currentStatistics().draftTokens, 0, "drafts were verified")
        XCTAssertEqual(tree.cache.openBlocks, 0)

        let swapped = try core {
            $0.kvCacheBytes = 6 * 16 * model.kvBytesPerPosition
            $0.swapMemoryBytes = 1 << 30
            $0.prefixCaching = false
        }
        check("swapped", try run(golden + randomRequests(6, seed: 4, maxPrompt: 40), on: swapped))
        let s = swapped.currentStatistics()
        XCTAssertGreaterThan(s.swapOuts, 0, "preempted sequences went to swap")
        XCTAssertEqual(s.swapIns, s.swapOuts)
        XCTAssertEqual(swapped.cache.openBlocks, 0)

        var request = golden[0]
        request.prompt = Array((0..<40).flatMap { _ in golden[0].prompt }.prefix(70))
        let colocated = try run([request], on: try core())[0]
        let (blocks, _) = try export(request.prompt, on: try core())
        XCTAssertEqual(blocks.map(\.tokens.count), [16, 16, 16, 16], "whole blocks only: the open one's staged keys stay")
        let decode = try core()
        XCTAssertEqual(try decode.importBlocks(blocks), KVImport(imported: 4))
        let continued = try run([request], on: decode)[0]
        XCTAssertEqual(continued.tokens, colocated.tokens, "greedy output as if computed here")
        XCTAssertEqual(continued.metrics?.cachedPromptTokens, 64)
        var partial = blocks[0]
        partial.tokens.removeLast(6)
        partial.contents.removeLast(partial.contents.count - decode.cache.bytes(positions: 10))
        let fresh = try core()
        XCTAssertThrowsError(try fresh.importBlocks([blocks[0], partial])) {
            XCTAssertEqual($0 as? EngineError, .invalidConfiguration("a KV block of 10 tokens is partial: this cache stages its q4_0 keys and takes whole blocks only"))
        }
        XCTAssertEqual(fresh.currentStatistics().importedKVBlocks, 0, "a refused import writes nothing")
    }
}
