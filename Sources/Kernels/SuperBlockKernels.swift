import KernelsC

/// Products of K-quant weights with activations quantized to Q8_K, as llama.cpp computes
/// them: per 256-value super-block two exact integers (`Σ_g scale_g Σ q·a` and
/// `Σ_g min_g Σ a`), then `acc = fma(d_w·d_a, Σ, acc)` and `low = fma(dmin_w·d_a, Σmin, low)`
/// super-block after super-block, and `acc - low`. The C kernels (AVX2 and up) and the
/// portable Swift loop below take exactly those float steps, so every instruction set and
/// every batch gives bitwise the same result.
enum SuperBlockKernels {
    /// Several K-quant matrices over the same input in one pass of the thread pool.
    static func multiply<Products: Collection>(_ products: Products, _ x: UnsafePointer<Float>, tokens: Int, pool: ThreadPool,
                                               scratch: inout PreparedActivations, reusing: Bool, accumulate: Bool)
    where Products.Element == (WeightMatrix, UnsafeMutablePointer<Float>) {
        let cols = products.first!.0.cols
        precondition(products.allSatisfy { $0.0.cols == cols && $0.0.format.activationPartner == .q8_K }, "grouped products need one input width and Q8_K")
        let blocks = cols / 256
        let key = PreparedActivations.Key(input: x, rows: tokens, count: cols, format: .q8_K, precision: .int8, lanes: 0)
        let act = scratch.superBlocks(count: tokens * blocks)
        // Tiles of sixteen tokens through the 512-bit kernel, the rest row by row, as for the
        // 32-value formats (IntegerKernels): both give every output bitwise the same value.
        let tileCount = IntegerKernels.level == .avx512vnni ? tokens / 16 + (tokens % 16 >= 10 ? 1 : 0) : 0
        let tiled = min(tileCount * 16, tokens)
        let tiles = scratch.superBlockTiles(count: max(tileCount * blocks, 1))
        if !(reusing && scratch.key == key) {
            let out = UncheckedBox(act)
            pool.parallelFor(tokens, minimumChunk: 4) { rows in
                apus_quantize_q8k(x + rows.lowerBound * cols, Int32(rows.count), Int32(cols), out.value + rows.lowerBound * blocks)
            }
            let tilesOut = UncheckedBox(tiles)
            pool.parallelFor(tileCount) { range in
                apus_build_tiles16k(out.value, Int32(blocks), Int32(tokens), Int32(range.lowerBound), Int32(range.upperBound), tilesOut.value)
            }
            scratch.key = key
        }
        let input = UncheckedBox(UnsafePointer(act))
        let tileInput = UncheckedBox(UnsafePointer(tiles))
        let group = UncheckedBox(products)
        let totalRows = products.reduce(0) { $0 + $1.0.rows }
        let useC = IntegerKernels.level != .portable
        pool.parallelFor(totalRows, minimumChunk: 16) { range in
            var first = 0
            for (w, y) in group.value {
                defer { first += w.rows }
                let lo = max(range.lowerBound, first) - first, hi = min(range.upperBound, first + w.rows) - first
                guard lo < hi else { continue }
                if useC, let kernel = w.format.cKernel {
                    var done = 0
                    if tileCount > 0, apus_matmul_q8k_tiles16(kernel, w.data, w.rowBytes, Int32(lo), Int32(hi), tileInput.value, Int32(tiled),
                                                              Int32(blocks), y, Int32(w.rows), accumulate ? 1 : 0) == 1 {
                        done = tiled
                    }
                    if done == tokens || apus_matmul_q8k(kernel, w.data, w.rowBytes, Int32(lo), Int32(hi), input.value + done * blocks, Int32(tokens - done),
                                                         Int32(blocks), y + done * w.rows, Int32(w.rows), accumulate ? 1 : 0) == 1 {
                        continue
                    }
                }
                guard let layout = w.format.layout as? any SuperBlockLayout.Type else {
                    preconditionFailure("\(w.format) pairs with Q8_K but has no super-block layout")
                }
                layout.integerRows(w, lo..<hi, input.value, tokens: tokens, into: y, accumulate: accumulate)
            }
        }
    }
}

extension SuperBlockLayout {
    /// The portable path: rows `rows` of `w` against `tokens` rows of Q8_K blocks.
    static func integerRows(_ w: WeightMatrix, _ rows: Range<Int>, _ act: UnsafePointer<apus_q8k_block>, tokens: Int,
                            into y: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let blocks = w.cols / 256
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { q in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 32) { table in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * tokens) { sums in
                    let q = q.baseAddress!, scales = table.baseAddress!, mins = table.baseAddress! + 16
                    let acc = sums.baseAddress!, low = sums.baseAddress! + tokens
                    for r in rows {
                        let row = w.row(r)
                        acc.initialize(repeating: 0, count: 2 * tokens)
                        for b in 0..<blocks {
                            let (dw, dmin) = integers(row + b * blockBytes, q: q, scales: scales, mins: mins)
                            for t in 0..<tokens {
                                withUnsafePointer(to: act[t * blocks + b]) { a in
                                    let (isum, imin) = Self.sums(q, scales, mins, a)
                                    let da = a.pointee.d
                                    acc[t] = acc[t].addingProduct(dw * da, Float(isum))
                                    low[t] = low[t].addingProduct(dmin * da, Float(imin))
                                }
                            }
                        }
                        for t in 0..<tokens {
                            let slot = y + t * w.rows + r
                            slot.pointee = accumulate ? slot.pointee + (acc[t] - low[t]) : acc[t] - low[t]
                        }
                    }
                }
            }
        }
    }

    @inline(__always)
    static func sums(_ q: UnsafePointer<Int8>, _ scales: UnsafePointer<Int32>, _ mins: UnsafePointer<Int32>,
                     _ a: UnsafePointer<apus_q8k_block>) -> (Int32, Int32) {
        let raw = UnsafeRawPointer(a)
        let qs = (raw + MemoryLayout<apus_q8k_block>.offset(of: \.qs)!).assumingMemoryBound(to: Int8.self)
        let bsums = (raw + MemoryLayout<apus_q8k_block>.offset(of: \.bsums)!).assumingMemoryBound(to: Int16.self)
        var isum: Int32 = 0, imin: Int32 = 0
        for g in 0..<16 {
            var dot: Int32 = 0
            for l in 0..<16 { dot &+= Int32(q[16 * g + l]) &* Int32(qs[16 * g + l]) }
            isum &+= scales[g] &* dot
            imin &+= mins[g] &* Int32(bsums[g])
        }
        return (isum, imin)
    }
}
