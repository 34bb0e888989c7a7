@testable import Router
import XCTest

final class PrefixIndexTests: XCTestCase {
    func key(_ text: String) -> [UInt8] { Array(text.utf8) }

    func testMatchesWholeChunksOfASharedPrefix() {
        let system = String(repeating: "You are a careful assistant. ", count: 10)  // 290 bytes: 4 full chunks
        var index = PrefixIndex(capacity: 100)
        index.insert(PrefixIndex.chunkHashes(key(system + "What is 2+2?")))
        XCTAssertEqual(index.count, 4)
        XCTAssertEqual(index.matchedChunks(PrefixIndex.chunkHashes(key(system + "Name a colour, please, any colour at all."))), 4)
        // The same bytes at another position are another prefix.
        XCTAssertEqual(index.matchedChunks(PrefixIndex.chunkHashes(key("x" + system))), 0)
    }

    func testEvictsTheLeastRecentlyUsedTailsFirst() {
        var index = PrefixIndex(capacity: 4)
        let a = PrefixIndex.chunkHashes(key(String(repeating: "a", count: 64 * 4)))
        let b = PrefixIndex.chunkHashes(key(String(repeating: "b", count: 64 * 2)))
        index.insert(a)
        index.insert(b)  // 6 chunks: over capacity + capacity/4, cut back to 4
        XCTAssertEqual(index.count, 4)
        XCTAssertEqual(index.matchedChunks(b), 2)
        // Of a, its head survives and its tail went.
        XCTAssertEqual(index.matchedChunks(a), 2)
    }
}
