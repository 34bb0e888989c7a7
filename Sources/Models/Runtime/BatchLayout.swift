import Kernels

/// How one forward pass's ragged batch maps onto the model and the paged cache, built
/// once per step before any layer runs (nano-vllm's model runner): each token's cache row,
/// the RoPE angles of each position for every RoPE configuration the architecture uses,
/// and the attention work order. Architectures only read it.
final class BatchLayout {
    let tokens: Int
    /// Token `t`'s row in every layer of the KV cache.
    let cacheRows: [Int]
    /// Further rows token `t`'s keys and values are copied to:
    /// `mirrorRows[mirrorStarts[t]..<mirrorStarts[t + 1]]` (no starts when there are none).
    let mirrorStarts: [Int]
    let mirrorRows: [Int]
    /// Staged keys (`kivi4`, Q4_0): the blocks this pass writes (to open), those whose last
    /// position it writes (`kivi4`: to seal once written), and blocks a sequence here has
    /// moved past (to close).
    /// A sequence's first token in a pass is always one it keeps (a prompt token or the last
    /// one sampled), so the blocks before it are full for good; any other holder of such a
    /// block is past it too, since blocks are shared only once full (prefix cache) or copied
    /// before a write (parallel samples).
    let blocksWritten: [Int]
    let blocksToSeal: [Int]
    let blocksToClose: [Int]
    /// Per RoPE configuration, `headDim` floats of cosines and sines per token.
    let angles: [FloatBuffer]
    /// The queries in attention's work order: each sequence's visited short-long-short-long
    /// (causal rows grow with position), so that any contiguous share of the work is fair.
    private(set) var queries: [Attention.Query] = []
    /// The sequences' block tables side by side; the queries point into it.
    private let tables: UnsafeMutableBufferPointer<Int32>

    /// Checks `batch` against the model and the cache, then lays it out.
    init(_ batch: ForwardBatch, shape: TransformerShape, ropes: [RoPEConfiguration], cache: PagedKVCache, kvWidth: Int) throws {
        guard cache.layers == shape.layers, cache.rowWidth == kvWidth else {
            throw ModelError.invalidBatch("the cache has \(cache.layers) layers of \(cache.rowWidth) values, the model \(shape.layers) of \(kvWidth)")
        }
        for t in batch.tokens where t < 0 || t >= shape.vocabularySize {
            throw ModelError.tokenOutOfRange(token: t, vocabularySize: shape.vocabularySize)
        }
        var total = 0
        for (i, s) in batch.sequences.enumerated() {
            total += s.count
            guard s.count > 0, s.firstPosition >= 0 else { throw ModelError.invalidBatch("sequence \(i) has \(s.count) tokens at position \(s.firstPosition)") }
            let needed = (s.firstPosition + s.count + cache.blockSize - 1) / cache.blockSize
            guard s.blockTable.count >= needed else {
                throw ModelError.invalidBatch("sequence \(i) reaches position \(s.firstPosition + s.count - 1) but its block table covers \(s.blockTable.count * cache.blockSize)")
            }
            for b in s.blockTable.prefix(needed) where b < 0 || Int(b) >= cache.blockCount {
                throw ModelError.invalidBatch("sequence \(i) names block \(b) of a cache of \(cache.blockCount)")
            }
        }
        guard total == batch.tokens.count else { throw ModelError.invalidBatch("the sequences hold \(total) tokens, the batch \(batch.tokens.count)") }
        var positions: [Int] = []
        if !batch.mirrors.isEmpty { for s in batch.sequences { positions += s.firstPosition..<(s.firstPosition + s.count) } }
        for (t, table) in batch.mirrors {
            guard t >= 0 && t < total else { throw ModelError.invalidBatch("mirrored token \(t) is outside the batch of \(total)") }
            guard positions[t] / cache.blockSize < table.count, (0..<Int32(cache.blockCount)).contains(table[positions[t] / cache.blockSize]) else {
                throw ModelError.invalidBatch("token \(t) is mirrored through a block table that does not cover position \(positions[t])")
            }
        }
        guard batch.mirrors.isEmpty || !cache.type.keys.isPerChannel else {
            throw ModelError.invalidBatch("kivi4 keys take no mirrored tokens (token trees are not supported with them)")
        }
        for r in batch.logitRows where r < 0 || r >= total { throw ModelError.invalidBatch("logit row \(r) is outside the batch of \(total)") }
        for r in batch.hiddenRows where r < 0 || r >= total { throw ModelError.invalidBatch("hidden row \(r) is outside the batch of \(total)") }

        let n = total, bs = cache.blockSize, d = shape.headDim
        tokens = n
        tables = .allocate(capacity: max(1, batch.sequences.reduce(0) { $0 + $1.blockTable.count }))
        let angles = ropes.map { _ in FloatBuffer(n * d) }
        var rows = [Int](repeating: 0, count: n)
        var offset = 0, first = 0
        queries.reserveCapacity(n)
        for s in batch.sequences {
            let table = tables.baseAddress! + offset
            for (i, b) in s.blockTable.enumerated() { table[i] = b }
            offset += s.blockTable.count
            for j in 0..<s.count {
                let p = s.firstPosition + j, t = first + j
                rows[t] = Int(s.blockTable[p / bs]) * bs + p % bs
                for (r, rope) in ropes.enumerated() { rope.angles(position: p, headDim: d, into: angles[r].pointer + t * d) }
            }
            for j in 0..<s.count {
                let t = j % 2 == 0 ? j / 2 : s.count - 1 - j / 2
                queries.append(Attention.Query(row: first + t, position: s.firstPosition + t, blockTable: UnsafePointer(table)))
            }
            first += s.count
        }
        cacheRows = rows
        if batch.mirrors.isEmpty {
            (mirrorStarts, mirrorRows) = ([], [])
        } else {
            let sorted = batch.mirrors.map { (token: $0.token, row: Int($0.blockTable[positions[$0.token] / bs]) * bs + positions[$0.token] % bs) }
                .sorted { $0.token < $1.token }
            var starts = [Int](repeating: 0, count: n + 1)
            for m in sorted { starts[m.token + 1] += 1 }
            for t in 0..<n { starts[t + 1] += starts[t] }
            (mirrorStarts, mirrorRows) = (starts, sorted.map(\.row))
        }
        self.angles = angles
        if cache.stagesKeys {
            let written = Set((rows + mirrorRows).map { $0 / bs })
            blocksWritten = written.sorted()
            blocksToSeal = cache.type.keys.isPerChannel ? Set(rows.filter { $0 % bs == bs - 1 }.map { $0 / bs }).sorted() : []
            blocksToClose = Set(batch.sequences.flatMap { s in s.blockTable.prefix(s.firstPosition / bs).map(Int.init) }).subtracting(written).sorted()
        } else {
            (blocksWritten, blocksToSeal, blocksToClose) = ([], [], [])
        }
    }

    /// The further rows token `t`'s keys and values go to.
    func mirrors(of t: Int) -> ArraySlice<Int> { mirrorStarts.isEmpty ? [] : mirrorRows[mirrorStarts[t]..<mirrorStarts[t + 1]] }

    deinit { tables.deallocate() }
}

/// One way an architecture rotates queries and keys: the base, optional per-pair frequency
/// factors (Llama 3's `rope_freqs`) and which dimensions pair up.
struct RoPEConfiguration {
    var base: Float
    var factors: [Float]?
    var layout: RoPE.Layout

    func angles(position: Int, headDim: Int, into table: UnsafeMutablePointer<Float>) {
        if let factors {
            factors.withUnsafeBufferPointer { RoPE.angles(position: position, headDim: headDim, base: base, factors: $0.baseAddress!, into: table) }
        } else {
            RoPE.angles(position: position, headDim: headDim, base: base, into: table)
        }
    }
}
