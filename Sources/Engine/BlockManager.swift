import Digest

/// Who holds which KV-cache block. Blocks are reference-counted: sequences that share a
/// prefix (parallel samples of one prompt, or requests that hit the prefix cache) hold the
/// same blocks, and a sequence about to write into a shared block copies it first.
///
/// The prefix cache (as in vLLM's automatic prefix caching; SGLang's RadixAttention keeps
/// the same information in a tree): a full block is named by a hash of its tokens chained
/// with the hash of everything before it, so equal hashes mean equal prefixes. A full block
/// whose last holder lets go stays cached, and is reused by any later sequence with the
/// same prefix, until its memory is needed: free blocks without content are handed out
/// first, then cached ones, least recently used first.
final class BlockManager {
    let blockCount: Int
    let blockSize: Int
    let prefixCaching: Bool

    private var references: [Int32]
    /// The content hash of each registered block.
    private var hashes: [UInt64?]
    /// Whether a registered block is named for its first positions only (a partial block
    /// imported from a prefill worker), so that its full name may replace that name.
    private var partial: [Bool]
    private var blocksByHash: [UInt64: Int32] = [:]
    /// Free blocks holding nothing worth keeping.
    private var empty: [Int32]
    /// Free registered blocks in least-recently-used order: an intrusive doubly linked list
    /// over block indices (-1 ends it), so every operation is O(1).
    private var previous: [Int32], next: [Int32]
    private var oldest: Int32 = -1, newest: Int32 = -1
    private(set) var cachedFreeCount = 0
    /// Called when a block's last holder lets go of it (cached or not): the cache frees what
    /// it keeps beside the block for its holders (staged `kivi4` or Q4_0 keys). A cached full
    /// block is read again later only from the pool; only a partial block imported from a
    /// prefill worker would be read from staging, and caches that stage keys import whole
    /// blocks only.
    var onFree: ((Int32) -> Void)?

    init(blockCount: Int, blockSize: Int, prefixCaching: Bool) {
        precondition(blockCount > 0 && blockSize > 0)
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.prefixCaching = prefixCaching
        references = Array(repeating: 0, count: blockCount)
        hashes = Array(repeating: nil, count: blockCount)
        partial = Array(repeating: false, count: blockCount)
        empty = (0..<Int32(blockCount)).reversed()
        previous = Array(repeating: -1, count: blockCount)
        next = Array(repeating: -1, count: blockCount)
    }

    /// Blocks that can be handed out now (empty, or cached and unreferenced).
    var freeCount: Int { empty.count + cachedFreeCount }
    /// Blocks some sequence holds.
    var usedCount: Int { blockCount - freeCount }
    /// Blocks whose content the prefix cache remembers, held or not.
    var cachedCount: Int { blocksByHash.count }

    func referenceCount(of block: Int32) -> Int { Int(references[Int(block)]) }

    /// A block for a sequence to write into, with one reference; nil when none is free
    /// (or, without `evictingCached`, when only cached blocks are).
    func allocate(evictingCached: Bool = true) -> Int32? {
        let block: Int32
        if let b = empty.popLast() {
            block = b
        } else if evictingCached, oldest >= 0 {
            block = oldest
            unlink(block)
            blocksByHash[hashes[Int(block)]!] = nil
            hashes[Int(block)] = nil
            partial[Int(block)] = false
        } else {
            return nil
        }
        references[Int(block)] = 1
        return block
    }

    /// Another holder for `block`.
    func retain(_ block: Int32) {
        if references[Int(block)] == 0 { unlink(block) }
        references[Int(block)] += 1
    }

    /// One holder fewer; the last one's release frees the block, keeping its content
    /// cached when it is registered.
    func release(_ block: Int32) {
        let i = Int(block)
        precondition(references[i] > 0, "block \(block) released more often than held")
        references[i] -= 1
        guard references[i] == 0 else { return }
        onFree?(block)
        if hashes[i] != nil { append(block) } else { empty.append(block) }
    }

    /// The cached block with content `hash`, retained for the caller.
    /// Whether a block named `hash` is cached (nothing retained).
    func isCached(_ hash: UInt64) -> Bool { prefixCaching && blocksByHash[hash] != nil }

    func lookup(_ hash: UInt64) -> Int32? {
        guard prefixCaching, let block = blocksByHash[hash] else { return nil }
        retain(block)
        return block
    }

    /// Remembers that full block `block` holds the prefix named `hash`. When another block
    /// already holds it (two sequences computed the same prefix at once), the first stays.
    func register(_ block: Int32, hash: UInt64) {
        let i = Int(block)
        guard prefixCaching, blocksByHash[hash] == nil, hashes[i] == nil || partial[i] else { return }
        if let old = hashes[i] { blocksByHash[old] = nil }
        blocksByHash[hash] = block
        hashes[i] = hash
        partial[i] = false
    }

    /// Remembers that block `block` holds, in its first positions, the tokens named `hash`
    /// (`hash(parent:tokens:)` of fewer tokens than a block): what a prefill worker computed
    /// of a prompt past its last full block. A sequence that finds it writes on after those
    /// positions (copying the block first when another holds it too).
    func registerPartial(_ block: Int32, hash: UInt64) {
        let i = Int(block)
        guard prefixCaching, blocksByHash[hash] == nil, hashes[i] == nil else { return }
        blocksByHash[hash] = block
        hashes[i] = hash
        partial[i] = true
    }

    /// The cached blocks of the longest prefix of `tokens` whose full blocks are cached,
    /// always leaving at least one token out (its logits are needed), retained for the
    /// caller, with their names.
    /// After the full blocks, a partial block holding the rest but the last token, when one
    /// was imported, is the last of `blocks` (not named in `hashes`, which names full blocks):
    /// `positions` counts the cached positions.
    func cachedPrefix(of tokens: [Int]) -> (blocks: [Int32], hashes: [UInt64], positions: Int) {
        var found: [Int32] = [], hashes: [UInt64] = []
        guard prefixCaching else { return (found, hashes, 0) }
        let reusable = (tokens.count - 1) / blockSize
        for i in 0..<reusable {
            let hash = Self.hash(parent: hashes.last, tokens: tokens[(i * blockSize)..<((i + 1) * blockSize)])
            guard let block = lookup(hash) else { break }
            found.append(block)
            hashes.append(hash)
        }
        var positions = found.count * blockSize
        if found.count == reusable, positions < tokens.count - 1,
           let block = lookup(Self.hash(parent: hashes.last, tokens: tokens[positions..<(tokens.count - 1)])) {
            found.append(block)
            positions = tokens.count - 1
        }
        return (found, hashes, positions)
    }

    /// Names the full blocks of `table` that the first `count` of `tokens` fill and
    /// `hashes` does not name yet, appending their names to `hashes`.
    func registerFullBlocks(_ table: [Int32], hashes: inout [UInt64], tokens: [Int], count: Int) {
        guard prefixCaching else { return }
        while hashes.count < count / blockSize {
            let i = hashes.count
            let hash = Self.hash(parent: hashes.last, tokens: tokens[(i * blockSize)..<((i + 1) * blockSize)])
            register(table[i], hash: hash)
            hashes.append(hash)
        }
    }

    /// The name of a full block: the first 8 bytes (little-endian) of the SHA-256 of its
    /// parent's name and its token ids, so the same tokens get the same name in every
    /// process and every run (a router can predict where a prefix is cached; a block shipped
    /// to another worker keeps its name), and no prompt can be built to take another's
    /// blocks, as a fast unkeyed hash would allow (vLLM hashes with SHA-256 for the same reason).
    static func hash(parent: UInt64?, tokens: ArraySlice<Int>) -> UInt64 {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(9 + 4 * tokens.count)
        if let parent {
            bytes.append(1)
            for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: parent >> (8 * UInt64(i)))) }
        } else {
            bytes.append(0)
        }
        for t in tokens {
            let id = UInt32(truncatingIfNeeded: t)
            for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: id >> (8 * UInt32(i)))) }
        }
        var sha = SHA256()
        sha.update(bytes)
        return sha.digest().prefix(8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    private func append(_ block: Int32) {
        let i = Int(block)
        previous[i] = newest
        next[i] = -1
        if newest >= 0 { next[Int(newest)] = block } else { oldest = block }
        newest = block
        cachedFreeCount += 1
    }

    private func unlink(_ block: Int32) {
        let i = Int(block)
        if previous[i] >= 0 { next[Int(previous[i])] = next[i] } else { oldest = next[i] }
        if next[i] >= 0 { previous[Int(next[i])] = previous[i] } else { newest = previous[i] }
        previous[i] = -1
        next[i] = -1
        cachedFreeCount -= 1
    }
}
