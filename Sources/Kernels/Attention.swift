import Foundation
import KernelsC

/// Causal scaled dot-product attention over a paged f16 KV cache, with grouped-query
/// attention (Ainslie et al. 2023): query head `h` reads KV head `h / (heads / kvHeads)`,
/// without copying K or V per query head.
///
/// Flash-style (Dao et al. 2022): one pass over the keys with an online softmax (a running
/// maximum and sum), so no score matrix is materialised. The arithmetic follows llama.cpp's
/// CPU flash-attention kernel, which the reference outputs came from (queries rounded to
/// f16 before the dot products with the f16 keys), except that the weighted sum of values
/// is kept in f32 where llama.cpp rounds it to f16 after every position: those roundings
/// were most of the AVX-512 kernel's work, and f32 is the more exact sum.
public enum Attention {
    public struct Shape: Sendable {
        public let heads: Int
        public let kvHeads: Int
        public let headDim: Int
        /// Sliding-window attention (Beltagy et al. 2020; Gemma's local layers): a query at
        /// position `p` sees positions `p - window + 1 ... p`, as llama.cpp's standard SWA
        /// mask; nil sees the whole prefix.
        public let window: Int?
        /// The factor on every score (`1/√headDim` unless the architecture says otherwise).
        public let scale: Float

        public init(heads: Int, kvHeads: Int, headDim: Int, window: Int? = nil, scale: Float? = nil) {
            precondition(heads % kvHeads == 0, "query heads must be a multiple of KV heads")
            precondition(window.map { $0 > 0 } ?? true, "a sliding window holds at least one position")
            self.heads = heads
            self.kvHeads = kvHeads
            self.headDim = headDim
            self.window = window
            self.scale = scale ?? 1 / Float(headDim).squareRoot()
        }

        /// The first position a query at `position` attends to.
        @inline(__always) func firstVisible(_ position: Int) -> Int { window.map { max(0, position + 1 - $0) } ?? 0 }

        public var kvStride: Int { kvHeads * headDim }
    }

    /// Keys are processed in fixed chunks of this many positions, each with its own online
    /// softmax, and the chunks combined in order (FlashDecoding, Dao et al. 2023). Decoding
    /// one token spreads the chunks over the threads; a batch computes the same chunks in
    /// turn, so a query gets bitwise the same result either way. Contexts up to one chunk
    /// are a single pass, llama.cpp's operations per position (the dot products' and exponentials'
    /// own order and rounding differ by kernel).
    public static let chunkPositions = 512

    /// One layer of a paged KV cache (PagedAttention, Kwon et al. 2023): rows of
    /// `shape.kvStride` keys and as many values (`keyRowBytes` and `valueRowBytes` bytes in
    /// `type`'s formats) in blocks of `blockSize` rows. Position `p` of a sequence is row
    /// `blockTable[p / blockSize] · blockSize + p % blockSize`.
    public struct PagedLayer {
        public let keys: UnsafeRawPointer
        public let values: UnsafeRawPointer
        public let blockSize: Int
        public let type: KVCacheType
        public let keyRowBytes: Int
        public let valueRowBytes: Int
        /// The open blocks' f16 keys: for `kivi4` keys always, for Q4_0 keys where the cache
        /// keeps them (a query reads its own block's keys from here).
        public let stagedKeys: StagedKeys?

        public init(keys: UnsafeRawPointer, values: UnsafeRawPointer, blockSize: Int, type: KVCacheType, keyRowBytes: Int, valueRowBytes: Int,
                    stagedKeys: StagedKeys? = nil) {
            precondition(blockSize > 0, "blocks hold at least one position")
            precondition(!type.keys.isPerChannel || (stagedKeys != nil && blockSize == ChannelKeys.positions),
                         "kivi4 keys need blocks of \(ChannelKeys.positions) positions and their staged keys")
            self.keys = keys
            self.values = values
            self.blockSize = blockSize
            self.type = type
            self.keyRowBytes = keyRowBytes
            self.valueRowBytes = valueRowBytes
            self.stagedKeys = stagedKeys
        }

        /// An f16 layer whose rows are `rowWidth` halves (the default: the row bytes are unused by the f16 path).
        public init(keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>, blockSize: Int) {
            self.init(keys: UnsafeRawPointer(keys), values: UnsafeRawPointer(values), blockSize: blockSize, type: .f16, keyRowBytes: 0, valueRowBytes: 0)
        }
    }

    /// The f16 keys of a cache's open blocks (`kivi4` keys, staged Q4_0 keys): block `b`'s rows of one layer start
    /// `offset` halves into `blocks[b]` (nil for a block that is not open).
    public struct StagedKeys {
        public let blocks: UnsafePointer<UnsafeMutablePointer<Float16>?>
        public let offset: Int

        public init(blocks: UnsafePointer<UnsafeMutablePointer<Float16>?>, offset: Int) {
            self.blocks = blocks
            self.offset = offset
        }
    }

    /// One query of a ragged batch: its row in the query and output matrices, its position
    /// (it attends to positions `0...position` of its sequence), and its sequence's blocks.
    public struct Query {
        public let row: Int
        public let position: Int
        public let blockTable: UnsafePointer<Int32>

        public init(row: Int, position: Int, blockTable: UnsafePointer<Int32>) {
            self.row = row
            self.position = position
            self.blockTable = blockTable
        }
    }

    /// Attention for every query of a ragged batch (rows of `heads · headDim` floats in
    /// `queries` and `output`), the keys and values read through each query's block table.
    /// Work is split over the threads in the order of `batch`; callers order long and short
    /// queries alternately so that any contiguous share holds a fair amount of work. A work
    /// item is a whole query when there are enough queries to keep every thread busy, else
    /// the heads of one KV head, else one head; every head's result is bitwise the same
    /// either way.
    public static func causal(queries: UnsafePointer<Float>, batch: UnsafeBufferPointer<Query>, cache: PagedLayer, shape: Shape,
                              into output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let d = shape.headDim
        let chunksMax = batch.reduce(0) { max($0, chunkCount(position: $1.position, shape: shape)) }
        if batch.count == 1 && chunksMax > 1 {
            splitDecode(query: batch[0], queries: queries, cache: cache, shape: shape, into: output, pool: pool)
            return
        }
        let qStride = shape.heads * d
        let group = shape.heads / shape.kvHeads
        // Work items: whole queries when there are enough of them to keep every thread busy
        // (a query then reads whole rows of its blocks, which the prefetchers stream best),
        // else each query's KV heads, else its heads.
        let (kvHeadsPerItem, groupPerItem) =
            batch.count >= 2 * pool.threads && shape.heads <= Int(APUS_MAX_HEADS) && group <= Int(APUS_MAX_GROUP) ? (shape.kvHeads, group)
            : batch.count * shape.kvHeads >= 2 * pool.threads && group <= Int(APUS_MAX_GROUP) ? (1, group) : (1, 1)
        let headsPerItem = kvHeadsPerItem * groupPerItem
        let itemsPerQuery = shape.heads / headsPerItem
        let perHead = Partials.floats(chunks: chunksMax, headDim: d)
        let out = UncheckedBox(output)
        pool.parallelFor(batch.count * itemsPerQuery) { range in
          // Scratch on the stack: nothing is allocated per step.
          withUnsafeTemporaryAllocation(of: Float.self, capacity: headsPerItem * (d + perHead)) { scratch in
            let q = scratch.baseAddress!
            let partials = Partials(q + headsPerItem * d, chunks: chunksMax, headDim: d, stride: perHead)
            for item in range {
                let query = batch[item / itemsPerQuery], h0 = (item % itemsPerQuery) * headsPerItem
                let source = queries + query.row * qStride + h0 * d
                for i in 0..<(headsPerItem * d) { q[i] = HalfPrecision.roundToF16(source[i]) }
                let visible = query.position + 1, first = shape.firstVisible(query.position)
                // Chunks stay aligned to absolute positions, so a windowed query splits the
                // same way alone or in any batch.
                let firstChunk = first / chunkPositions, chunks = (visible + chunkPositions - 1) / chunkPositions - firstChunk
                for i in 0..<chunks {
                    let c = firstChunk + i
                    chunk(q, kvHeads: kvHeadsPerItem, group: groupPerItem, cache: cache, blockTable: query.blockTable, shape: shape, firstHead: h0,
                          query: query.position, positions: max(first, c * chunkPositions)..<min(visible, (c + 1) * chunkPositions), into: partials, index: i)
                }
                for j in 0..<headsPerItem { partials.head(j).combine(chunks, into: out.value + query.row * qStride + (h0 + j) * d) }
            }
          }
        }
    }

    /// Chunks a query at `position` reads.
    static func chunkCount(position: Int, shape: Shape) -> Int {
        (position + chunkPositions) / chunkPositions - shape.firstVisible(position) / chunkPositions
    }

    /// The unnormalised value sums, maxima and denominators of a query head's chunks, in a
    /// buffer the caller owns; the next head's start `stride` floats further on.
    struct Partials {
        let sums: UnsafeMutablePointer<Float>
        let maxima: UnsafeMutablePointer<Float>
        let denominators: UnsafeMutablePointer<Float>
        let headDim: Int
        let chunks: Int
        let stride: Int

        static func floats(chunks: Int, headDim: Int) -> Int { max(chunks, 1) * (headDim + 2) }

        init(_ buffer: UnsafeMutablePointer<Float>, chunks: Int, headDim: Int, stride: Int = 0) {
            sums = buffer
            maxima = buffer + max(chunks, 1) * headDim
            denominators = maxima + max(chunks, 1)
            self.headDim = headDim
            self.chunks = chunks
            self.stride = stride
        }

        /// The partials of the `j`-th head after this one.
        func head(_ j: Int) -> Partials { Partials(sums + j * stride, chunks: chunks, headDim: headDim, stride: stride) }

        /// Softmax-weighted values over all chunks, combined in chunk order.
        func combine(_ chunks: Int, into o: UnsafeMutablePointer<Float>) {
            let d = headDim
            if chunks == 1 {
                let inv = 1 / denominators[0]
                for i in 0..<d { o[i] = sums[i] * inv }
                return
            }
            let m = UnsafeBufferPointer(start: maxima, count: chunks).max()!
            var total: Float = 0
            o.initialize(repeating: 0, count: d)
            for c in 0..<chunks {
                let w = expf(maxima[c] - m)
                total = total.addingProduct(denominators[c], w)
                for i in 0..<d { o[i] = o[i].addingProduct(sums[c * d + i], w) }
            }
            let inv = 1 / total
            for i in 0..<d { o[i] *= inv }
        }
    }

    /// `kvHeads · group` query heads from `firstHead` (`group` of them per KV head; their
    /// f16-rounded queries `headDim` apart in `q`), of the query at position `query`, over
    /// `positions` of a sequence, read through its block table: an online softmax pass into
    /// chunk `index` of each head's partials.
    static func chunk(_ q: UnsafePointer<Float>, kvHeads: Int, group: Int, cache: PagedLayer, blockTable: UnsafePointer<Int32>, shape: Shape,
                      firstHead h0: Int, query: Int, positions: Range<Int>, into partials: Partials, index c: Int) {
        let d = shape.headDim, bs = cache.blockSize, heads = kvHeads * group
        let modelGroup = shape.heads / shape.kvHeads
        let scale = shape.scale
        for j in 0..<heads {
            let p = partials.head(j)
            (p.sums + c * d).initialize(repeating: 0, count: d)
            p.maxima[c] = -.infinity  // running maximum
            p.denominators[c] = 0  // and softmax denominator
        }
        if !cache.type.isF16 {
            quantizedChunk(q, kvHeads: kvHeads, group: group, cache: cache, blockTable: blockTable, shape: shape, firstKVHead: h0 / modelGroup,
                           query: query, positions: positions, into: partials, index: c)
            return
        }
        let keys = cache.keys.assumingMemoryBound(to: Float16.self) + (h0 / modelGroup) * d
        let values = cache.values.assumingMemoryBound(to: Float16.self) + (h0 / modelGroup) * d
        var rows = apus_kv_rows(keys: UnsafeRawPointer(keys).assumingMemoryBound(to: UInt16.self),
                                values: UnsafeRawPointer(values).assumingMemoryBound(to: UInt16.self),
                                table: blockTable, block_size: Int32(bs), stride: Int32(shape.kvStride), value_stride: Int32(shape.kvStride))
        let done = apus_attention_f16(q, Int32(kvHeads), Int32(group), Int32(d), &rows, Int32(positions.lowerBound),
                                      Int32(positions.upperBound), Int32(d), scale, partials.sums + c * d, partials.maxima + c,
                                      partials.denominators + c, Int32(partials.stride))
        if done != 0 { return }
        for j in 0..<heads {
            let p = partials.head(j), o = p.sums + c * d, qj = q + j * d
            let kvOffset = (j / group) * d
            var m = p.maxima[c], sum = p.denominators[c]
            for position in positions {
                let row = (Int(blockTable[position / bs]) * bs + position % bs) * shape.kvStride + kvOffset
                let score = dotF16(qj, keys + row, d) * scale
                var ms: Float = 1, vs: Float = 1
                if score > m {
                    ms = m == -.infinity ? 0 : expf(m - score)
                    m = score
                } else {
                    vs = expf(score - m)
                }
                accumulate(o, scale: ms, plus: values + row, times: vs, d)
                sum = vs.addingProduct(sum, ms)
            }
            p.maxima[c] = m
            p.denominators[c] = sum
        }
    }

    /// `chunk` over quantized keys or values (either may be f16), a cache block's run of positions at a time:
    /// the run's keys decoded to f32 and scored against each of the KV head's query heads,
    /// then the online softmax position by position, each value decoded to f32 once for its
    /// query heads. The query is not quantized (it is rounded to f16, as for an f16 cache):
    /// quantizing it to 8 bits as well (llama.cpp's one-token path, and this kernel's first
    /// version) doubled the perplexity cost of a
    /// quantized cache (`bench/2026-12-04-kv-quantization.md`). With AVX2, the C kernel does
    /// the same eight positions at a time (`apus_attention_quantized`, and for `kivi4` keys
    /// `apus_attention_kivi4`).
    ///
    /// Staged keys (`kivi4`, and Q4_0 where the cache stages them): the query's own block
    /// (that of position `query`) from its f16 keys, every other block decoded from its
    /// channels or rows.
    static func quantizedChunk(_ q: UnsafePointer<Float>, kvHeads: Int, group: Int, cache: PagedLayer, blockTable: UnsafePointer<Int32>,
                               shape: Shape, firstKVHead: Int, query: Int, positions: Range<Int>, into partials: Partials, index c: Int) {
        let d = shape.headDim, bs = cache.blockSize, perChannel = cache.type.keys.isPerChannel
        let valueLayout = cache.type.values.tensorFormat.layout, valueHeadBytes = cache.type.values.rowBytes(d)
        // The C kernel where this CPU has one: rows are whole two-byte units.
        let keyHeadBytes = perChannel ? 0 : cache.type.keys.rowBytes(d)
        var rows = apus_kv_rows(keys: (cache.keys + firstKVHead * keyHeadBytes).assumingMemoryBound(to: UInt16.self),
                                values: (cache.values + firstKVHead * valueHeadBytes).assumingMemoryBound(to: UInt16.self),
                                table: blockTable, block_size: Int32(bs), stride: Int32(cache.keyRowBytes / 2),
                                value_stride: Int32(cache.valueRowBytes / 2))
        var staged = apus_staged_keys()
        if let keys = cache.stagedKeys {
            staged = apus_staged_keys(staged: UnsafeRawPointer(keys.blocks).assumingMemoryBound(to: UnsafePointer<UInt16>?.self),
                                      staged_offset: keys.offset, width: Int32(shape.kvStride), first_channel: Int32(firstKVHead * d),
                                      own_block: Int32(query / bs))
        }
        let done = withUnsafePointer(to: staged) { staged in
            if perChannel {
                var keys = apus_kivi4_keys(blocks: cache.keys.assumingMemoryBound(to: UInt8.self), staged: staged.pointee)
                return apus_attention_kivi4(Int32(cache.type.values.tensorFormat.ggmlType), &keys, q, Int32(kvHeads), Int32(group), Int32(d), &rows,
                                            Int32(positions.lowerBound), Int32(positions.upperBound), Int32(d), shape.scale, partials.sums + c * d,
                                            partials.maxima + c, partials.denominators + c, Int32(partials.stride))
            }
            return apus_attention_quantized(Int32(cache.type.keys.tensorFormat.ggmlType), Int32(cache.type.values.tensorFormat.ggmlType),
                                            cache.stagedKeys == nil ? nil : staged, q, Int32(kvHeads), Int32(group), Int32(d), &rows,
                                            Int32(positions.lowerBound), Int32(positions.upperBound), Int32(d), shape.scale, partials.sums + c * d,
                                            partials.maxima + c, partials.denominators + c, Int32(partials.stride))
        }
        if done != 0 { return }
        let width = shape.kvStride, ownBlock = query / bs
        func decodeKeys(head: Int, block: Int, logicalBlock: Int, slots: Range<Int>, into keys: UnsafeMutablePointer<Float>) {
            if let staged = cache.stagedKeys, logicalBlock == ownBlock {
                let rows = staged.blocks[block]!
                for (i, slot) in slots.enumerated() {
                    let row = rows + staged.offset + slot * width + head * d
                    for j in 0..<d { keys[i * d + j] = Float(row[j]) }
                }
            } else if perChannel {
                ChannelKeys.dequantize(cache.keys + block * bs * cache.keyRowBytes, width: width, channels: (head * d)..<((head + 1) * d),
                                       positions: slots, into: keys, stride: d)
            } else {
                let keyLayout = cache.type.keys.tensorFormat.layout, keyHeadBytes = cache.type.keys.rowBytes(d)
                for (i, slot) in slots.enumerated() {
                    keyLayout.dequantizeRow(cache.keys + (block * bs + slot) * cache.keyRowBytes + head * keyHeadBytes, count: d, into: keys + i * d)
                }
            }
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: bs * d + d) { scratch in
            let keys = scratch.baseAddress!, value = scratch.baseAddress! + bs * d
            for kh in 0..<kvHeads {
                let head = firstKVHead + kh
                var p = positions.lowerBound
                while p < positions.upperBound {
                    let offset = p % bs, n = min(bs - offset, positions.upperBound - p)
                    let block = Int(blockTable[p / bs]), row = block * bs + offset
                    decodeKeys(head: head, block: block, logicalBlock: p / bs, slots: offset..<(offset + n), into: keys)
                    for i in 0..<n {
                        valueLayout.dequantizeRow(cache.values + (row + i) * cache.valueRowBytes + head * valueHeadBytes, count: d, into: value)
                        for j in 0..<group {
                            let state = partials.head(kh * group + j), o = state.sums + c * d
                            let score = dotF32(q + (kh * group + j) * d, keys + i * d, d) * shape.scale
                            var m = state.maxima[c], ms: Float = 1, vs: Float = 1
                            if score > m {
                                ms = m == -.infinity ? 0 : expf(m - score)
                                m = score
                            } else {
                                vs = expf(score - m)
                            }
                            accumulate(o, scale: ms, plus: value, times: vs, d)
                            state.maxima[c] = m
                            state.denominators[c] = vs.addingProduct(state.denominators[c], ms)
                        }
                    }
                    p += n
                }
            }
        }
    }

    /// One token against a long context: every (head, chunk) pair is a work item.
    static func splitDecode(query: Query, queries: UnsafePointer<Float>, cache: PagedLayer, shape: Shape,
                            into output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let d = shape.headDim
        let visible = query.position + 1, first = shape.firstVisible(query.position)
        let firstChunk = first / chunkPositions
        let chunks = chunkCount(position: query.position, shape: shape)
        let perHead = Partials.floats(chunks: chunks, headDim: d)
        let source = queries + query.row * shape.heads * d
        withUnsafeTemporaryAllocation(of: Float.self, capacity: shape.heads * (d + perHead)) { scratch in
            let q = UncheckedBox(scratch.baseAddress!)
            let buffers = UncheckedBox(scratch.baseAddress! + shape.heads * d)
            for i in 0..<(shape.heads * d) { q.value[i] = HalfPrecision.roundToF16(source[i]) }
            pool.parallelFor(shape.heads * chunks) { range in
                for item in range {
                    let h = item / chunks, i = item % chunks, c = firstChunk + i
                    chunk(q.value + h * d, kvHeads: 1, group: 1, cache: cache, blockTable: query.blockTable, shape: shape, firstHead: h,
                          query: query.position, positions: max(first, c * chunkPositions)..<min(visible, (c + 1) * chunkPositions),
                          into: Partials(buffers.value + h * perHead, chunks: chunks, headDim: d), index: i)
                }
            }
            let out = output + query.row * shape.heads * d
            for h in 0..<shape.heads { Partials(buffers.value + h * perHead, chunks: chunks, headDim: d).combine(chunks, into: out + h * d) }
        }
    }

    /// `Σ q[i] · k[i]` over f16 keys in the order of ggml's AVX-512 `ggml_vec_dot_f16`: four
    /// 16-lane accumulators over steps of 64, combined pairwise, the tail summed in double.
    @inline(__always)
    static func dotF16(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float16>, _ d: Int) -> Float {
        typealias V = SIMD16<Float>
        func load(_ i: Int) -> (V, V) {
            (UnsafeRawPointer(q + i).loadUnaligned(as: V.self), V(UnsafeRawPointer(k + i).loadUnaligned(as: SIMD16<Float16>.self)))
        }
        var a0 = V(), a1 = V(), a2 = V(), a3 = V()
        var i = 0
        while i + 64 <= d {
            var (x, y) = load(i)
            a0.addProduct(x, y)
            (x, y) = load(i + 16)
            a1.addProduct(x, y)
            (x, y) = load(i + 32)
            a2.addProduct(x, y)
            (x, y) = load(i + 48)
            a3.addProduct(x, y)
            i += 64
        }
        var dot = Double(((a0 + a2) + (a1 + a3)).sum())
        while i < d { dot += Double(q[i] * Float(k[i])); i += 1 }
        return Float(dot)
    }

    /// `Σ q[i] · k[i]` over keys decoded to f32 (`d` a multiple of 32): two 16-lane
    /// accumulators, one horizontal sum.
    @inline(__always)
    static func dotF32(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ d: Int) -> Float {
        typealias V = SIMD16<Float>
        var a0 = V(), a1 = V()
        var i = 0
        while i + 32 <= d {
            a0.addProduct(UnsafeRawPointer(q + i).loadUnaligned(as: V.self), UnsafeRawPointer(k + i).loadUnaligned(as: V.self))
            a1.addProduct(UnsafeRawPointer(q + i + 16).loadUnaligned(as: V.self), UnsafeRawPointer(k + i + 16).loadUnaligned(as: V.self))
            i += 32
        }
        return (a0 + a1).sum()
    }

    /// `accumulate` of values already decoded to f32 (`d` a multiple of 16).
    @inline(__always)
    static func accumulate(_ o: UnsafeMutablePointer<Float>, scale ms: Float, plus v: UnsafePointer<Float>, times vs: Float, _ d: Int) {
        typealias V = SIMD16<Float>
        var i = 0
        while i + 16 <= d {
            var acc = UnsafeRawPointer(o + i).loadUnaligned(as: V.self)
            if ms != 1 { acc *= ms }
            UnsafeMutableRawPointer(o + i).storeBytes(of: acc.addingProduct(UnsafeRawPointer(v + i).loadUnaligned(as: V.self), vs), as: V.self)
            i += 16
        }
    }

    /// `o = o · ms + v · vs` with a fused multiply-add: the running sum of values, where a new
    /// maximum first rescales the sum (`ms`) and each value enters with its weight (`vs`).
    @inline(__always)
    static func accumulate(_ o: UnsafeMutablePointer<Float>, scale ms: Float, plus v: UnsafePointer<Float16>, times vs: Float, _ d: Int) {
        var i = 0
        while i + 16 <= d {
            var acc = UnsafeRawPointer(o + i).loadUnaligned(as: SIMD16<Float>.self)
            if ms != 1 { acc *= ms }
            let values = SIMD16<Float>(UnsafeRawPointer(v + i).loadUnaligned(as: SIMD16<Float16>.self))
            UnsafeMutableRawPointer(o + i).storeBytes(of: acc.addingProduct(values, vs), as: SIMD16<Float>.self)
            i += 16
        }
        while i < d {
            var acc = o[i]
            if ms != 1 { acc *= ms }
            o[i] = acc.addingProduct(Float(v[i]), vs)
            i += 1
        }
    }
}
