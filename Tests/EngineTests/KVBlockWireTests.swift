@testable import Engine
import Kernels
import XCTest

/// The block stream format: what goes in comes out whatever the stream's pieces, and
/// anything cut short, corrupt, out of order, misnamed or from another model is refused
/// with what is wrong.
final class KVBlockWireTests: XCTestCase {
    let layout = KVLayout(layers: 3, rowWidth: 5, blockSize: 4)
    let model: UInt64 = 0x1234_5678_9abc_def0

    func blocks(_ count: Int, seed: UInt64 = 7) -> [KVBlock] {
        var g = SplitMix64(seed: seed)
        var parent: UInt64?
        return (0..<count).map { index in
            let tokens = (0..<layout.blockSize).map { _ in Int.random(in: 0..<50_000, using: &g) }
            let name = KVBlock.name(parent: parent, tokens: tokens[...])
            parent = name
            return KVBlock(index: index, name: name, tokens: tokens, contents: (0..<layout.bytesPerBlock).map { _ in UInt8.random(in: 0...255, using: &g) })
        }
    }

    func stream(_ blocks: [KVBlock], model: UInt64? = nil, layout: KVLayout? = nil) -> [UInt8] {
        KVBlockWire.header(layout ?? self.layout, model: model ?? self.model)
            + blocks.flatMap(KVBlockWire.record) + KVBlockWire.end(blocks: blocks.count)
    }

    /// A block's record as block `index` of its prompt.
    func record(_ block: KVBlock, index: Int) -> [UInt8] {
        var block = block
        block.index = index
        return KVBlockWire.record(block)
    }

    /// Feeds `bytes` in pieces of `piece` bytes; returns the blocks, or throws the first error.
    func decode(_ bytes: [UInt8], piece: Int, maxBlocks: Int = 100) throws -> [KVBlock] {
        var decoder = KVBlockWire.Decoder(layout: layout, model: model, maxBlocks: maxBlocks)
        var out: [KVBlock] = []
        var i = 0
        while i < bytes.count {
            let end = min(bytes.count, i + piece)
            out += try bytes[i..<end].withUnsafeBytes { try decoder.feed($0) }
            i = end
        }
        try decoder.finish()
        return out
    }

    func message(_ work: () throws -> Any) -> String? {
        do { _ = try work(); return nil } catch { return "\(error)" }
    }

    func testBlocksSurviveAnyPiecing() throws {
        let sent = blocks(5)
        let bytes = stream(sent)
        XCTAssertEqual(bytes.count, KVBlockWire.headerBytes + 5 * KVBlockWire.recordBytes(layout) + 12)
        for piece in [1, 3, 7, 31, KVBlockWire.recordBytes(layout) + 1, bytes.count] {
            XCTAssertEqual(try decode(bytes, piece: piece), sent, "pieces of \(piece) bytes")
        }
        XCTAssertEqual(try decode(stream([]), piece: 5), [], "a prompt shorter than a block sends none")
        // Idle records between and before blocks change nothing.
        let idling = KVBlockWire.header(layout, model: model) + KVBlockWire.idle() + KVBlockWire.idle()
            + sent.flatMap { KVBlockWire.record($0) + KVBlockWire.idle() } + KVBlockWire.end(blocks: sent.count)
        XCTAssertEqual(try decode(idling, piece: 3), sent)
        // A flood of them in one piece is skipped in a loop, not by recursion.
        let flood = KVBlockWire.header(layout, model: model) + Array((0..<200_000).map { _ in KVBlockWire.idle() }.joined()) + KVBlockWire.end(blocks: 0)
        XCTAssertEqual(try decode(flood, piece: flood.count), [])
    }

    /// Full blocks, then the prompt's last positions in a partial block: of the next block,
    /// or of the last full one again.
    func partial(after sent: [KVBlock], index: Int, positions: Int) -> KVBlock {
        let tokens = Array((0..<positions).map { 100 + $0 })
        return KVBlock(index: index, name: KVBlock.name(parent: index > 0 ? sent[index - 1].name : nil, tokens: tokens[...]), tokens: tokens,
                       contents: (0..<layout.bytes(positions: positions)).map { UInt8(truncatingIfNeeded: $0) })
    }

    func testAPartialBlockEndsThePrompt() throws {
        let sent = blocks(3)
        for (index, positions) in [(3, 1), (3, 3), (2, 3), (0, 2)] {
            let last = partial(after: sent, index: index, positions: positions)
            let all = Array(sent.prefix(max(index, index == 0 ? 0 : 3))) + [last]
            let bytes = KVBlockWire.header(layout, model: model) + all.flatMap(KVBlockWire.record)
                + KVBlockWire.end(blocks: all.count)
            XCTAssertEqual(try decode(bytes, piece: 13), all, "partial block \(index) of \(positions) positions")
        }
        let last = partial(after: sent, index: 3, positions: 2)
        let after = KVBlockWire.header(layout, model: model) + sent.flatMap(KVBlockWire.record)
            + record(last, index: 3) + record(sent[0], index: 4)
        XCTAssertEqual(message { try self.decode(after, piece: 64) }, "a block follows the partial block, which ends the prompt")
        let early = KVBlockWire.header(layout, model: model) + record(sent[0], index: 0) + record(partial(after: sent, index: 0, positions: 2), index: 0)
            + KVBlockWire.end(blocks: 2)
        XCTAssertEqual(try decode(early, piece: 64).count, 2, "a partial block of the last full block's position")
        let misplaced = KVBlockWire.header(layout, model: model) + record(partial(after: sent, index: 2, positions: 2), index: 2)
        XCTAssertEqual(message { try self.decode(misplaced, piece: 64) }, "block 2 came where block 0 was due")
    }

    func testABrokenStreamIsRefusedWithWhatIsWrong() {
        let sent = blocks(3)
        let bytes = stream(sent)
        XCTAssertEqual(message { try self.decode(Array(bytes.dropLast(12)), piece: 64) }, "the stream ended after 3 blocks, before its end record")
        XCTAssertEqual(message { try self.decode(Array(bytes.prefix(10)), piece: 64) }, "the stream ended before its header")
        XCTAssertEqual(message { try self.decode(Array(bytes.prefix(KVBlockWire.headerBytes + 100)), piece: 64) }, "the stream ended after 0 blocks, before its end record")
        // One bit flipped anywhere in a block's values.
        var corrupt = bytes
        corrupt[KVBlockWire.headerBytes + KVBlockWire.recordBytes(layout) + 50] ^= 0x10
        XCTAssertEqual(message { try self.decode(corrupt, piece: 64) }, "a checksum does not match after 1 blocks: the stream is corrupt")
        var header = bytes
        header[9] ^= 1
        XCTAssertEqual(message { try self.decode(header, piece: 64) }, "a checksum does not match after 0 blocks: the stream is corrupt")
        XCTAssertEqual(message { try self.decode(Array("{\"json\": true}".utf8) + bytes, piece: 64) }, "the stream does not start with APKV: it is not KV blocks")
        XCTAssertEqual(message { try self.decode(bytes + [0], piece: 64) }, "bytes follow the end record")
    }

    func testBlocksOutOfOrderOrMisnamedAreRefused() {
        let sent = blocks(3)
        let header = KVBlockWire.header(layout, model: model)
        let swapped = header + record(sent[0], index: 0) + record(sent[2], index: 2)
        XCTAssertEqual(message { try self.decode(swapped, piece: 64) }, "block 2 came where block 1 was due")
        // In its place, but named for other tokens: it could poison the cache for another prompt.
        let misnamed = header + record(sent[0], index: 0) + record(sent[2], index: 1)
        XCTAssertEqual(message { try self.decode(misnamed, piece: 64) }, "block 1's name is not the name of its tokens after block 0")
        XCTAssertEqual(message { try self.decode(self.stream(self.blocks(4)), piece: 64, maxBlocks: 3) }, "the stream carries more than 3 blocks, more than this cache holds")
        let miscounted = header + record(sent[0], index: 0) + KVBlockWire.end(blocks: 2)
        XCTAssertEqual(message { try self.decode(miscounted, piece: 64) }, "the end record counts 2 blocks; 1 came")
    }

    func testBlocksOfAnotherModelOrLayoutAreRefused() {
        XCTAssertEqual(message { try self.decode(self.stream(self.blocks(1), model: 42), piece: 64) },
                       "the blocks come from another model (identity 2a; this worker's is 123456789abcdef0)")
        let other = KVLayout(layers: 3, rowWidth: 5, blockSize: 8)
        XCTAssertEqual(message { try self.decode(KVBlockWire.header(other, model: self.model), piece: 64) },
                       "the blocks have 3 layers of 5 keys and values per position (f16), 8 positions per block; this worker's cache has 3 layers of 5 keys and values per position (f16), 4 positions per block")
        // Q8_0 keys and values (ggml's element type 8) cannot go into an f16 cache.
        let quantized = KVLayout(layers: 3, rowWidth: 64, blockSize: 4, type: KVCacheType(.q8_0))
        XCTAssertEqual(Array(KVBlockWire.header(quantized, model: model)[6..<8]), [8, 8])
        XCTAssertEqual(message { try self.decode(KVBlockWire.header(quantized, model: self.model), piece: 64) },
                       "the blocks have 3 layers of 64 keys and values per position (q8_0), 4 positions per block; this worker's cache has 3 layers of 5 keys and values per position (f16), 4 positions per block")
        // Q8_0 keys with Q4_0 values (element type 2) name each.
        let mixed = KVLayout(layers: 3, rowWidth: 64, blockSize: 4, type: KVCacheType(keys: .q8_0, values: .q4_0))
        XCTAssertEqual(Array(KVBlockWire.header(mixed, model: model)[6..<8]), [8, 2])
        XCTAssertEqual(message { try self.decode(KVBlockWire.header(mixed, model: self.model), piece: 64) },
                       "the blocks have 3 layers of 64 keys and values per position (k q8_0, v q4_0), 4 positions per block; this worker's cache has 3 layers of 5 keys and values per position (f16), 4 positions per block")
    }
}
