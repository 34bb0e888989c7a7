import KernelsC

/// The int8 path through the C kernels (`KernelsC`), which use the integer dot-product
/// instructions Swift cannot express: AVX-512 VNNI `vpdpbusd` where the CPU has it, else
/// AVX2 `vpmaddubsw`. Chosen at run time; without either, `MatMul` keeps its portable Swift
/// path. Every path gives llama.cpp's integers for each block; only the fp32 summation of
/// the blocks differs between paths.
public enum IntegerKernels {
    public enum Level: Int32, Comparable, Sendable, CaseIterable {
        case portable = 0, avx2 = 1, avx512vnni = 2
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    /// The instruction set in use.
    public static var level: Level { Level(rawValue: apus_int8_isa()) ?? .portable }

    /// The best level this CPU supports.
    public static var available: Level {
        let current = apus_int8_isa()
        defer { apus_set_int8_isa(current) }
        return Level(rawValue: apus_set_int8_isa(2)) ?? .portable
    }

    /// Uses at most `level` from now on (for tests and benchmarks); returns the level in force.
    @discardableResult
    public static func limit(to level: Level) -> Level { Level(rawValue: apus_set_int8_isa(level.rawValue)) ?? .portable }

    /// Several matrices over the same input (Q, K and V; gate and up) in one pass of the
    /// thread pool: the rows of all of them are split between the threads together.
    static func multiply<Products: Collection>(_ products: Products, _ x: UnsafePointer<Float>, tokens: Int,
                                               pool: ThreadPool, scratch: inout PreparedActivations, reusing: Bool, accumulate: Bool)
    where Products.Element == (WeightMatrix, UnsafeMutablePointer<Float>) {
        let cols = products.first!.0.cols
        precondition(products.allSatisfy { $0.0.cols == cols }, "grouped products need one input width")
        let blocks = cols / 32
        // One quantization serves every int8 format: the block sum is always computed.
        let key = PreparedActivations.Key(input: x, rows: tokens, count: cols, format: nil, precision: .int8, lanes: 0)
        let act = scratch.quantizedBlocks(count: tokens * blocks)
        // Tiles of sixteen tokens go through the 512-bit kernel, the rest token by token; both
        // give every output bitwise the same value. Ten or more tokens left over fill a
        // partial tile: a tile costs about what nine or ten tokens cost one by one (measured
        // with `apus bench -p 8,12,15`).
        let tileCount = level == .avx512vnni ? tokens / 16 + (tokens % 16 >= 10 ? 1 : 0) : 0
        let tiled = min(tileCount * 16, tokens)
        let tiles = scratch.tileBlocks(count: max(tileCount * blocks, 1))
        if !(reusing && scratch.key == key) {
            let blocksOut = UncheckedBox(act)
            pool.parallelFor(tokens, minimumChunk: 8) { rows in
                apus_quantize_q8(x + rows.lowerBound * cols, Int32(rows.count), Int32(cols), 1, blocksOut.value + rows.lowerBound * blocks)
            }
            let tilesOut = UncheckedBox(tiles)
            pool.parallelFor(tileCount) { range in
                apus_build_tiles16(blocksOut.value, Int32(blocks), Int32(tokens), Int32(range.lowerBound), Int32(range.upperBound), tilesOut.value)
            }
            scratch.key = key
        }
        let input = UncheckedBox(UnsafePointer(act))
        let tileInput = UncheckedBox(UnsafePointer(tiles))
        let group = UncheckedBox(products)
        let totalRows = products.reduce(0) { $0 + $1.0.rows }
        pool.parallelFor(totalRows, minimumChunk: 16) { range in
            var first = 0
            for (w, y) in group.value {
                defer { first += w.rows }
                let lo = max(range.lowerBound, first) - first, hi = min(range.upperBound, first + w.rows) - first
                guard lo < hi else { continue }
                guard let format = w.format.cKernel else { preconditionFailure("\(w.format) has no C kernel") }
                if tileCount > 0 {
                    let done = apus_matmul_tiles16(format, w.data, w.rowBytes, Int32(lo), Int32(hi), tileInput.value, Int32(tiled),
                                                   Int32(blocks), y, Int32(w.rows), accumulate ? 1 : 0)
                    precondition(done == 1, "the VNNI kernel refused format \(w.format)")
                }
                if tiled < tokens {
                    let done = apus_matmul_q8(format, w.data, w.rowBytes, Int32(lo), Int32(hi), input.value + tiled * blocks,
                                              Int32(tokens - tiled), Int32(blocks), y + tiled * w.rows, Int32(w.rows), accumulate ? 1 : 0)
                    precondition(done == 1, "the C kernels refused format \(w.format)")
                }
            }
        }
    }
}
