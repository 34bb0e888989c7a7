@testable import Engine
import XCTest

final class BlockManagerTests: XCTestCase {
    func testReferenceCountsAndFreeing() {
        let m = BlockManager(blockCount: 3, blockSize: 4, prefixCaching: true)
        let a = m.allocate()!, b = m.allocate()!, c = m.allocate()!
        XCTAssertEqual(Set([a, b, c]), [0, 1, 2])
        XCTAssertNil(m.allocate(), "all three are held")
        m.retain(b)
        m.release(b)
        XCTAssertEqual(m.freeCount, 0, "b still has a holder")
        m.release(b)
        XCTAssertEqual(m.freeCount, 1)
        XCTAssertEqual(m.allocate(), b)
        XCTAssertEqual(m.usedCount, 3)
    }

    func testFreedRegisteredBlocksStayCachedAndAreEvictedLeastRecentlyUsedFirst() {
        let m = BlockManager(blockCount: 4, blockSize: 2, prefixCaching: true)
        let blocks = (0..<4).map { _ in m.allocate()! }
        let hashes: [UInt64] = [10, 11, 12]
        for i in 0..<3 { m.register(blocks[i], hash: hashes[i]) }
        // Release in the order 1, 0, 2, 3 (3 is unregistered).
        for i in [1, 0, 2, 3] { m.release(blocks[i]) }
        XCTAssertEqual(m.freeCount, 4)
        XCTAssertEqual(m.cachedCount, 3)
        // A lookup takes block 0 off the free list.
        XCTAssertEqual(m.lookup(10), blocks[0])
        XCTAssertEqual(m.referenceCount(of: blocks[0]), 1)
        // Allocation hands out the empty block first, then evicts 1 (oldest), then 2.
        XCTAssertEqual(m.allocate(), blocks[3])
        XCTAssertEqual(m.allocate(), blocks[1])
        XCTAssertNil(m.lookup(11), "evicted")
        XCTAssertEqual(m.lookup(12), blocks[2], "still cached")
        XCTAssertNil(m.allocate())
    }

    func testWithoutPrefixCachingNothingIsRemembered() {
        let m = BlockManager(blockCount: 2, blockSize: 2, prefixCaching: false)
        let a = m.allocate()!
        m.register(a, hash: 5)
        m.release(a)
        XCTAssertNil(m.lookup(5))
        XCTAssertEqual(m.cachedCount, 0)
    }

    func testChainedHashesNameWholePrefixes() {
        let x = BlockManager.hash(parent: nil, tokens: [1, 2][...])
        XCTAssertEqual(x, BlockManager.hash(parent: nil, tokens: [1, 2][...]))
        XCTAssertNotEqual(BlockManager.hash(parent: x, tokens: [3, 4][...]), BlockManager.hash(parent: nil, tokens: [3, 4][...]))
        XCTAssertNotEqual(x, BlockManager.hash(parent: nil, tokens: [2, 1][...]))
    }

    /// The names are the same in every process and run: these are the values Python's
    /// hashlib gives for the same bytes (SHA-256 of a parent marker, the parent's name and
    /// the ids, little-endian; the first 8 bytes).
    func testBlockNamesAreStableAcrossProcesses() {
        let first = BlockManager.hash(parent: nil, tokens: Array(1...16)[...])
        XCTAssertEqual(first, 0x59be_dcfc_804b_1a77)
        XCTAssertEqual(BlockManager.hash(parent: first, tokens: Array(100..<116)[...]), 0x82f8_6ce1_c6ed_9afb)
    }

    /// An imported partial block serves the rest of a prompt but its last token, and gives
    /// its name up to the full one once a sequence fills it.
    func testAPartialBlockServesThePromptsLastPositionsUntilItFills() {
        let m = BlockManager(blockCount: 4, blockSize: 4, prefixCaching: true)
        let tokens = [1, 2, 3, 4, 5, 6, 7]
        let first = BlockManager.hash(parent: nil, tokens: tokens[0..<4])
        let a = m.allocate()!, b = m.allocate()!
        m.register(a, hash: first)
        m.registerPartial(b, hash: BlockManager.hash(parent: first, tokens: tokens[4..<6]))
        m.release(a)
        m.release(b)
        let found = m.cachedPrefix(of: tokens)
        XCTAssertEqual(found.blocks, [a, b])
        XCTAssertEqual(found.hashes, [first], "hashes name full blocks only")
        XCTAssertEqual(found.positions, 6, "all but the last token")
        XCTAssertEqual(m.cachedPrefix(of: [1, 2, 3, 4, 5, 9, 7]).positions, 4, "other tokens after the full block: no partial hit")
        // Filled and named in full, the block is found by its full name only.
        let full = BlockManager.hash(parent: first, tokens: [5, 6, 7, 8][...])
        m.register(b, hash: full)
        XCTAssertTrue(m.isCached(full))
        XCTAssertFalse(m.isCached(BlockManager.hash(parent: first, tokens: tokens[4..<6])))
        XCTAssertEqual(m.cachedCount, 2)
    }
}
