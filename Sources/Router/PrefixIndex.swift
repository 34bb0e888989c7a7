/// What the router believes one replica holds in its prefix cache: the prompts it sent
/// there, as chained hashes of fixed-size chunks of their routing keys (a radix tree cut at
/// chunk boundaries), least recently used dropped first past a capacity, as the replica's
/// own cache drops blocks. It is a prediction; the replica's counters say what it really hit.
struct PrefixIndex {
    /// Routing-key bytes per chunk (about 16 tokens of English, one KV block).
    static let chunkBytes = 64

    /// The chained hash of each full chunk of `key`: chunk i's names the whole prefix up to it.
    static func chunkHashes(_ key: [UInt8]) -> [Int] {
        var hashes: [Int] = []
        hashes.reserveCapacity(key.count / chunkBytes)
        key.withUnsafeBytes { bytes in
            var parent = 0
            var start = 0
            while start + chunkBytes <= bytes.count {
                var h = Hasher()
                h.combine(parent)
                h.combine(bytes: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + chunkBytes)]))
                parent = h.finalize()
                hashes.append(parent)
                start += chunkBytes
            }
        }
        return hashes
    }

    /// Chunks kept at most; past it the least recently used go.
    var capacity: Int
    private var lastUse: [Int: UInt64] = [:]
    private var clock: UInt64 = 0

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { lastUse.count }

    /// How many leading chunks of a prompt this replica holds.
    func matchedChunks(_ hashes: [Int]) -> Int {
        var n = 0
        while n < hashes.count, lastUse[hashes[n]] != nil { n += 1 }
        return n
    }

    /// Records that the replica now holds this prompt. Deeper chunks are stamped older than
    /// the ones before them, so eviction takes a prompt's tail before its head, as a radix
    /// tree evicts leaves first.
    mutating func insert(_ hashes: [Int]) {
        for h in hashes.reversed() {
            clock += 1
            lastUse[h] = clock
        }
        // Evicting in batches keeps the cost per insert constant on average.
        if lastUse.count > capacity + capacity / 4 {
            let keep = lastUse.sorted { $0.value > $1.value }.prefix(capacity)
            lastUse = Dictionary(uniqueKeysWithValues: keep.map { ($0.key, $0.value) })
        }
    }
}
