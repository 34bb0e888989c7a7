import Kernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The keys and values of every sequence in one pool of fixed-size blocks (PagedAttention,
/// Kwon et al. 2023). A sequence owns a block table; position `p` lives in block
/// `table[p / blockSize]` at offset `p % blockSize`. Keys and values are each f16, as in
/// llama.cpp's default cache, or Q8_0 / Q4_0 blocks (`KVCacheType`). Which block belongs to whom is the
/// engine's business: this type only stores, and copies a block for copy-on-write.
///
/// `kivi4` keys (`ChannelKeys`) are quantized a whole block at a time, once its last position
/// is written; until then a block's keys are kept in f16 in a staging area of its own,
/// allocated when the block is first written and freed when the block is closed (every
/// sequence holding it has moved past it) or discarded (its last holder let go).
///
/// Q4_0 keys are staged the same way beside their rows (KIVI's full-precision residual), so
/// that a query reads the keys of its own block, the up to 16 positions just before it, in
/// f16: attention heads that look at the last few tokens are the ones 4-bit keys hurt most
/// (Qwen2.5-Coder-0.5B, mean over eight draws of the key transform's signs: +3.9% perplexity
/// over f16 with every key in Q4_0, +1.6% with the own block in f16;
/// `bench/2026-12-07-kv-q4_0-sign-draws.md`).
/// Their rows are written as the keys come, so a full block needs no staging: whole blocks
/// are what such a cache swaps and exports.
public final class PagedKVCache: @unchecked Sendable {
    public let layers: Int
    public let blockSize: Int
    public let blockCount: Int
    /// Values per position per layer (KV heads × head dimension), for keys and again for values.
    public let rowWidth: Int
    public let type: KVCacheType
    /// Bytes of one position's keys, and of its values, in one layer.
    public let keyRowBytes: Int
    public let valueRowBytes: Int
    let keys: [UnsafeMutableRawPointer]
    let values: [UnsafeMutableRawPointer]
    /// Per block, its keys in f16 while it is open (`stagesKeys`): per layer, `blockSize` rows
    /// of `rowWidth`.
    let staging: UnsafeMutablePointer<UnsafeMutablePointer<Float16>?>
    private let mapping: UnsafeMutableRawPointer
    private let mappedBytes: Int

    /// Bytes one block takes over all layers, keys and values.
    public static func bytesPerBlock(layers: Int, blockSize: Int, rowWidth: Int, type: KVCacheType) -> Int {
        layers * blockSize * type.rowBytes(rowWidth)
    }

    /// The whole pool is committed here, as llama.cpp and vLLM allocate theirs up front:
    /// first-touch page faults in the middle of serving cost 3–4% of a benchmark's time
    /// (measured under 16 concurrent requests, in a VM). On Linux the pool asks for
    /// transparent huge pages first, so a batch reading blocks scattered over the pool
    /// misses the TLB far less often.
    ///
    /// `stagesQ4_0Keys` false keeps Q4_0 keys in their rows only: a draft model's cache, whose
    /// sequences go back into blocks they have left (its drafts are only proposals).
    public init(layers: Int, blockSize: Int, blockCount: Int, rowWidth: Int, type: KVCacheType = .f16, stagesQ4_0Keys: Bool = true) {
        precondition(layers > 0 && blockSize > 0 && blockCount > 0 && rowWidth > 0, "empty KV cache")
        for f in [type.keys, type.values] where !f.isPerChannel {
            precondition(f.tensorFormat.canStore(rowLength: rowWidth), "rows of \(rowWidth) values are not whole \(f) blocks")
        }
        precondition(!type.values.isPerChannel, "kivi4 stores keys only")
        precondition(!type.keys.isPerChannel || blockSize == ChannelKeys.positions, "kivi4 keys need blocks of \(ChannelKeys.positions) positions")
        self.layers = layers
        self.blockSize = blockSize
        self.blockCount = blockCount
        self.rowWidth = rowWidth
        self.type = type
        stagesKeys = type.keys.isPerChannel || (type.keys == .q4_0 && stagesQ4_0Keys)
        keyRowBytes = type.keys.rowBytes(rowWidth)
        valueRowBytes = type.values.rowBytes(rowWidth)
        let hugePage = 2 << 20
        let keyBytes = blockCount * blockSize * keyRowBytes, layerBytes = blockCount * blockSize * (keyRowBytes + valueRowBytes)
        let bytes = layers * layerBytes
        mappedBytes = (bytes + 2 * hugePage - 1) / hugePage * hugePage
        guard let region = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), region != MAP_FAILED else {
            fatalError("could not map \(bytes) bytes for the KV cache")
        }
        mapping = region
        // Huge pages need 2 MiB alignment; the mapping has one page to spare for it.
        let aligned = UnsafeMutableRawPointer(bitPattern: (Int(bitPattern: region) + hugePage - 1) / hugePage * hugePage)!
        #if os(Linux)
        _ = madvise(aligned, mappedBytes - hugePage, MADV_HUGEPAGE)
        #endif
        var page = 0
        while page < bytes {
            aligned.storeBytes(of: 0, toByteOffset: page, as: UInt8.self)
            page += 4096
        }
        keys = (0..<layers).map { aligned + $0 * layerBytes }
        values = (0..<layers).map { aligned + $0 * layerBytes + keyBytes }
        staging = .allocate(capacity: blockCount)
        staging.initialize(repeating: nil, count: blockCount)
    }

    deinit {
        for b in 0..<blockCount { staging[b]?.deallocate() }
        staging.deallocate()
        munmap(mapping, mappedBytes)
    }

    /// Whether an open block's keys are staged in f16: `kivi4` keys (quantized a block at a
    /// time, when it is sealed) and Q4_0 keys (also in their rows from the start).
    public let stagesKeys: Bool

    /// Gives block `block` a staging area if it has none: it is about to be written.
    func open(_ block: Int) {
        guard stagesKeys, staging[block] == nil else { return }
        let count = layers * blockSize * rowWidth
        staging[block] = .allocate(capacity: count)
        staging[block]!.initialize(repeating: 0, count: count)
    }

    /// Frees block `block`'s staging area: no query will read its keys from there again
    /// (it is sealed, and every sequence holding it has moved past it), or its content is
    /// worthless (nobody holds it). Blocks without one are left as they are.
    public func close(_ block: Int) {
        guard stagesKeys, let area = staging[block] else { return }
        area.deallocate()
        staging[block] = nil
    }

    /// Blocks that have a staging area now.
    public var openBlocks: Int { stagesKeys ? (0..<blockCount).reduce(0) { $0 + (staging[$1] == nil ? 0 : 1) } : 0 }

    /// The f16 keys of position `slot` of open block `block` in layer `layer`.
    public func stagedKeys(block: Int, layer: Int, slot: Int) -> UnsafeMutablePointer<Float16> {
        precondition(staging[block] != nil, "block \(block) is not open")
        return staging[block]! + (layer * blockSize + slot) * rowWidth
    }

    /// Quantizes open block `block`'s staged keys of layer `layer` into the pool: its last
    /// position has been written.
    public func seal(block: Int, layer: Int) {
        ChannelKeys.quantize(stagedKeys(block: block, layer: layer, slot: 0), width: rowWidth,
                             into: keys[layer] + block * blockSize * keyRowBytes)
    }

    /// Bytes a sequence's first `positions` positions take over all layers, keys and values.
    public func bytes(positions: Int) -> Int { layers * positions * (keyRowBytes + valueRowBytes) }

    /// Copies a sequence's first `positions` positions, read through `table`, out into
    /// `buffer` (`bytes(positions:)` long: per layer its keys, then its values): a swap-out.
    /// A cache that stages keys copies whole blocks only (an open block's staged keys stay
    /// behind: its positions are recomputed).
    public func read(table: [Int32], positions: Int, into buffer: UnsafeMutableRawPointer) {
        precondition(!type.keys.isPerChannel, "kivi4 keys are not swapped: the engine recomputes them")
        precondition(!stagesKeys || positions % blockSize == 0, "staged keys are copied in whole blocks, not \(positions) positions")
        transfer(table: table, positions: positions) { cache, i, count in (buffer + i).copyMemory(from: cache, byteCount: count) }
    }

    /// Writes what `read` copied back through `table` (which may name other blocks): a swap-in.
    public func write(table: [Int32], positions: Int, from buffer: UnsafeRawPointer) {
        precondition(!type.keys.isPerChannel, "kivi4 keys are not swapped: the engine recomputes them")
        precondition(!stagesKeys || positions % blockSize == 0, "staged keys are copied in whole blocks, not \(positions) positions")
        transfer(table: table, positions: positions) { cache, i, count in cache.copyMemory(from: buffer + i, byteCount: count) }
    }

    private func transfer(table: [Int32], positions: Int, _ copy: (UnsafeMutableRawPointer, Int, Int) -> Void) {
        precondition(positions <= table.count * blockSize, "the block table does not cover \(positions) positions")
        var offset = 0
        for l in 0..<layers {
            for (half, rowBytes) in [(keys[l], keyRowBytes), (values[l], valueRowBytes)] {
                var p = 0
                while p < positions {
                    let block = Int(table[p / blockSize]), count = min(blockSize, positions - p) * rowBytes
                    precondition((0..<blockCount).contains(block), "block \(block) is outside the pool")
                    copy(half + block * blockSize * rowBytes, offset, count)
                    offset += count
                    p += blockSize
                }
            }
        }
    }

    /// Copies the first `positions` entries of block `source` into block `destination`, in
    /// every layer: the copy of copy-on-write.
    public func copyBlock(_ source: Int, to destination: Int, positions: Int) {
        precondition((0..<blockCount).contains(source) && (0..<blockCount).contains(destination) && positions <= blockSize)
        // A block's kivi4 keys are whole-block data: copied whole, with the staged keys.
        let keyBytes = type.keys.isPerChannel ? blockSize * keyRowBytes : positions * keyRowBytes
        for l in 0..<layers {
            for (half, rowBytes, bytes) in [(keys[l], keyRowBytes, keyBytes), (values[l], valueRowBytes, positions * valueRowBytes)] {
                let stride = blockSize * rowBytes
                (half + destination * stride).copyMemory(from: half + source * stride, byteCount: bytes)
            }
        }
        if stagesKeys, let area = staging[source] {
            open(destination)
            staging[destination]!.update(from: area, count: layers * blockSize * rowWidth)
        }
    }

    /// Layer `layer` as attention reads it.
    func attentionLayer(_ layer: Int) -> Attention.PagedLayer {
        Attention.PagedLayer(keys: keys[layer], values: values[layer], blockSize: blockSize, type: type, keyRowBytes: keyRowBytes,
                             valueRowBytes: valueRowBytes,
                             stagedKeys: stagesKeys ? Attention.StagedKeys(blocks: UnsafePointer(staging), offset: layer * blockSize * rowWidth) : nil)
    }
}

/// One sequence's part of a ragged batch: its next `count` tokens, at positions
/// `firstPosition ..< firstPosition + count`, stored through `blockTable`, which must cover
/// all of them.
public struct SequenceSlice: Sendable {
    public var count: Int
    public var firstPosition: Int
    public var blockTable: [Int32]

    public init(count: Int, firstPosition: Int, blockTable: [Int32]) {
        self.count = count
        self.firstPosition = firstPosition
        self.blockTable = blockTable
    }
}

/// Tokens of several sequences run in one forward pass, without padding: the tokens of
/// `sequences[0]` first, then those of `sequences[1]`, and so on.
public struct ForwardBatch: Sendable {
    public var tokens: [Int] = []
    public var sequences: [SequenceSlice] = []
    /// Indices into `tokens` whose next-token logits are wanted, in the order returned.
    public var logitRows: [Int] = []
    /// Indices into `tokens` whose final hidden state (after the output norm, before the
    /// head: what embeddings pool) is wanted, returned after the logits.
    public var hiddenRows: [Int] = []
    /// Tokens whose keys and values are also written through another block table, at the
    /// same position (a token tree's shared tokens, into each branch's own blocks).
    public var mirrors: [(token: Int, blockTable: [Int32])] = []

    public init() {}

    /// Appends a sequence's next tokens, asking for the logits of the last `logitsOfLast`
    /// of them (a verify pass wants every drafted position's).
    public mutating func append(_ tokens: some Collection<Int>, firstPosition: Int, blockTable: [Int32], logitsOfLast: Int) {
        precondition(!tokens.isEmpty, "a slice of a batch has at least one token")
        precondition((0...tokens.count).contains(logitsOfLast), "logits of \(logitsOfLast) of \(tokens.count) tokens")
        self.tokens.append(contentsOf: tokens)
        sequences.append(SequenceSlice(count: tokens.count, firstPosition: firstPosition, blockTable: blockTable))
        logitRows.append(contentsOf: (self.tokens.count - logitsOfLast)..<self.tokens.count)
    }
}

/// Keys and values of one sequence at a time, for the single-stream tools (`run`, `chat`,
/// perplexity, scoring): a paged cache whose blocks are all this sequence's, in order.
public final class KVCache: @unchecked Sendable {
    public let storage: PagedKVCache
    public let capacity: Int
    let blockTable: [Int32]
    /// Positions filled so far.
    public internal(set) var length = 0

    public init(layers: Int, capacity: Int, rowWidth: Int, type: KVCacheType = .f16, blockSize: Int = 16) {
        let blocks = max(1, (capacity + blockSize - 1) / blockSize)
        storage = PagedKVCache(layers: layers, blockSize: blockSize, blockCount: blocks, rowWidth: rowWidth, type: type)
        self.capacity = capacity
        blockTable = (0..<Int32(blocks)).map { $0 }
    }

    /// Forgets positions from `newLength` on (for example to start a new sequence). kivi4
    /// keys keep no f16 copy of a block the sequence has moved past, so when `newLength`
    /// falls inside such a block it forgets from that block's start, whose positions are
    /// computed again.
    public func truncate(to newLength: Int) {
        let kept = min(length, max(0, newLength)), bs = storage.blockSize
        let closed = storage.stagesKeys && kept % bs != 0 && storage.staging[Int(blockTable[kept / bs])] == nil
        length = closed ? kept / bs * bs : kept
    }
}
