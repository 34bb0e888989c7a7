import Foundation
import KernelsC
@testable import Kernels
import XCTest

final class MatMulTests: XCTestCase {
    /// Runs the kernel on `tokens` random rows against a random `rows × cols` matrix.
    func check(format: TensorFormat, rows: Int, cols: Int, tokens: Int, threads: Int, seed start: UInt64) {
        var seed = start
        let weightsF = (0..<rows).map { _ in Reference.randomValues(cols, seed: &seed) }
        let stored = weightsF.map { Quantization.quantize($0, format: format) }
        let dequantized = stored.map { Quantization.dequantize($0, count: cols, format: format) }
        let x = (0..<tokens).map { _ in Reference.randomValues(cols, seed: &seed, scale: 2) }
        let data = stored.flatMap { $0 }
        let flatX = x.flatMap { $0 }
        let pool = ThreadPool(threads: threads)
        var scratch = PreparedActivations()
        defer { scratch.release() }
        for precision in ActivationPrecision.allCases {
            var y = [Float](repeating: .nan, count: tokens * rows)
            data.withUnsafeBytes { raw in
                let w = WeightMatrix(format: format, rows: rows, cols: cols, data: raw.baseAddress!)
                MatMul.multiply(w, flatX, tokens: tokens, into: &y, precision: precision, pool: pool, scratch: &scratch)
            }
            let expected: [[Double]]
            let tolerance: Double
            switch (precision, format.activationPartner) {
            case (.int8, .q8_0), (.int8, .q8_1):
                expected = Reference.matmulInt8(format: format, rows: stored, cols: cols, x)
                tolerance = 2e-5
            case (.int8, .q8_K):
                expected = Reference.matmulFloat(dequantized, x.map(Reference.roundTripQ8K))
                tolerance = 2e-5
            case (.int8, .f16):
                expected = Reference.matmulFloat(dequantized, x.map { $0.map { Float(Float16($0)) } })
                tolerance = 1e-5
            case (.int8, .bf16):
                expected = Reference.matmulFloat(dequantized, x.map { $0.map { HalfPrecision.bf16ToFloat(HalfPrecision.floatToBF16($0)) } })
                tolerance = 1e-5
            default:
                expected = Reference.matmulFloat(dequantized, x)
                tolerance = 1e-5
            }
            for t in 0..<tokens {
                for r in 0..<rows {
                    let e = expected[t][r]
                    XCTAssertEqual(Double(y[t * rows + r]), e, accuracy: tolerance * max(1, Double(cols).squareRoot() * 2),
                                   "\(format) \(precision) rows \(rows) cols \(cols) tokens \(tokens) at [\(t)][\(r)]")
                }
            }
        }
    }

    /// The instruction-set levels this CPU can run, each tested against the same reference.
    var levels: [IntegerKernels.Level] { IntegerKernels.Level.allCases.filter { $0 <= IntegerKernels.available } }

    override func tearDown() { IntegerKernels.limit(to: .avx512vnni) }

    func testEveryFormatAgainstTheReferenceOnAwkwardSizes() {
        for level in levels {
            XCTAssertEqual(IntegerKernels.limit(to: level), level)
            for (i, format) in TensorFormat.all.enumerated() {
                let cols = format.blockSize == 256 ? 256 * 3 : format.isQuantized ? 32 * 7 : 45
                for tokens in [1, 3, 19, 70] {
                    check(format: format, rows: 37, cols: cols, tokens: tokens, threads: tokens % 2 == 0 ? 3 : 1, seed: UInt64(100 * i + tokens))
                }
            }
        }
    }

    /// The single-token and the tiled kernels give bitwise the same row on every path,
    /// whatever else is in the batch and however rows are split between threads.
    func testResultsAreBatchInvariant() {
        for level in levels {
            IntegerKernels.limit(to: level)
            for format in TensorFormat.all {
                for precision in ActivationPrecision.allCases { checkBatchInvariance(format, precision) }
            }
        }
    }

    func checkBatchInvariance(_ format: TensorFormat, _ precision: ActivationPrecision) {
        var seed: UInt64 = 9
        let rows = 29, cols = format.blockSize == 256 ? 512 : 32 * 5
        let stored = (0..<rows).flatMap { _ in Quantization.quantize(Reference.randomValues(cols, seed: &seed), format: format) }
        // 2, 4, 5, 9: small batches (a verify pass, a few decoding sequences) through the row
        // kernels; 23 tokens: one tile and seven tokens through the row kernels; 29: a full
        // and a partial tile.
        for tokens in [2, 4, 5, 9, 23, 29] {
            let x = Reference.randomValues(cols * tokens, seed: &seed)
            var scratch = PreparedActivations()
            defer { scratch.release() }
            stored.withUnsafeBytes { raw in
                let w = WeightMatrix(format: format, rows: rows, cols: cols, data: raw.baseAddress!)
                var batch = [Float](repeating: 0, count: tokens * rows)
                MatMul.multiply(w, x, tokens: tokens, into: &batch, precision: precision, pool: ThreadPool(threads: 2), scratch: &scratch)
                for t in Set([0, 1, 7, 17, tokens - 1]) where t < tokens {
                    var single = [Float](repeating: 0, count: rows)
                    Array(x[(t * cols)..<((t + 1) * cols)]).withUnsafeBufferPointer { xt in
                        MatMul.multiply(w, xt.baseAddress!, tokens: 1, into: &single, precision: precision, pool: ThreadPool(threads: 3), scratch: &scratch)
                    }
                    XCTAssertEqual(single.map(\.bitPattern), batch[(t * rows)..<((t + 1) * rows)].map(\.bitPattern),
                                   "\(format) \(precision) \(IntegerKernels.level) token \(t) of \(tokens)")
                }
            }
        }
    }

    /// Accumulating into `y` is bitwise the product added to what was there, on every path
    /// (one token takes the one-token kernels, four rows at a time for the K-quants).
    func testAccumulatingAddsTheProduct() {
        var seed: UInt64 = 11
        let rows = 21, cols = 256 * 2
        for level in levels {
            IntegerKernels.limit(to: level)
            for format in [TensorFormat.q4_1, .q8_0, .f16, .q4_K, .q6_K] {
                for precision in ActivationPrecision.allCases {
                    for tokens in [1, 18] {
                        let stored = (0..<rows).flatMap { _ in Quantization.quantize(Reference.randomValues(cols, seed: &seed), format: format) }
                        let x = Reference.randomValues(cols * tokens, seed: &seed)
                        let base = Reference.randomValues(rows * tokens, seed: &seed)
                        var scratch = PreparedActivations()
                        defer { scratch.release() }
                        stored.withUnsafeBytes { raw in
                            let w = WeightMatrix(format: format, rows: rows, cols: cols, data: raw.baseAddress!)
                            var product = [Float](repeating: 0, count: rows * tokens)
                            MatMul.multiply(w, x, tokens: tokens, into: &product, precision: precision, pool: ThreadPool(threads: 2), scratch: &scratch)
                            var y = base
                            MatMul.multiply(w, x, tokens: tokens, into: &y, precision: precision, pool: ThreadPool(threads: 2), scratch: &scratch, accumulating: true)
                            XCTAssertEqual(y.map(\.bitPattern), zip(base, product).map { ($0 + $1).bitPattern }, "\(level) \(format) \(precision) \(tokens) tokens")
                        }
                    }
                }
            }
        }
    }

    /// Products grouped over one input give bitwise what separate calls give.
    func testGroupedProductsMatchSeparateCalls() {
        var seed: UInt64 = 12
        let cols = 32 * 4, tokens = 21
        let shapes: [(TensorFormat, Int)] = [(.q4_1, 19), (.q8_0, 7), (.q5_0, 33)]
        let stored = shapes.map { format, rows in (0..<rows).flatMap { _ in Quantization.quantize(Reference.randomValues(cols, seed: &seed), format: format) } }
        let x = Reference.randomValues(cols * tokens, seed: &seed)
        for level in levels {
            IntegerKernels.limit(to: level)
            var scratch = PreparedActivations()
            defer { scratch.release() }
            let pointers = stored.map { bytes in bytes.withUnsafeBytes { raw -> UnsafeMutableRawPointer in
                let p = UnsafeMutableRawPointer.allocate(byteCount: raw.count, alignment: 64)
                p.copyMemory(from: raw.baseAddress!, byteCount: raw.count)
                return p
            } }
            defer { pointers.forEach { $0.deallocate() } }
            let matrices = zip(shapes, pointers).map { WeightMatrix(format: $0.0, rows: $0.1, cols: cols, data: $1) }
            let grouped = matrices.map { UnsafeMutablePointer<Float>.allocate(capacity: $0.rows * tokens) }
            defer { grouped.forEach { $0.deallocate() } }
            MatMul.multiply(Array(zip(matrices, grouped)), x, tokens: tokens, precision: .int8, pool: ThreadPool(threads: 2), scratch: &scratch)
            for (w, y) in zip(matrices, grouped) {
                var separate = [Float](repeating: 0, count: w.rows * tokens)
                MatMul.multiply(w, x, tokens: tokens, into: &separate, precision: .int8, pool: ThreadPool(threads: 3), scratch: &scratch)
                XCTAssertEqual(separate.map(\.bitPattern), (0..<(w.rows * tokens)).map { y[$0].bitPattern }, "\(level) \(w.format)")
            }
        }
    }

    /// The int8 product's bits on each level this CPU can run, in `levels` order.
    func bitsOnEveryLevel(_ format: TensorFormat, _ stored: [UInt8], rows: Int, cols: Int, _ x: [Float], tokens: Int, threads: Int) -> [[UInt32]] {
        levels.map { level in
            IntegerKernels.limit(to: level)
            var scratch = PreparedActivations()
            defer { scratch.release() }
            var y = [Float](repeating: 0, count: rows * tokens)
            stored.withUnsafeBytes { raw in
                MatMul.multiply(WeightMatrix(format: format, rows: rows, cols: cols, data: raw.baseAddress!), x, tokens: tokens, into: &y,
                                precision: .int8, pool: ThreadPool(threads: threads), scratch: &scratch)
            }
            return y.map(\.bitPattern)
        }
    }

    /// K-quant products give bitwise the same floats on every level, since each super-block
    /// is two exact integers and the float steps are the same everywhere. Three super-blocks a
    /// row take the one-token kernel's four-row passes; sixteen make rows too long for them.
    func testSuperBlockProductsAreBitwiseEqualOnEveryLevel() {
        var seed: UInt64 = 13
        let rows = 19
        for cols in [256 * 3, 256 * 16] {
            for format in TensorFormat.all where format.activationPartner == .q8_K {
                let stored = (0..<rows).flatMap { _ in Quantization.quantize(Reference.randomValues(cols, seed: &seed), format: format) }
                for tokens in [1, 5, 17] {
                    let x = Reference.randomValues(cols * tokens, seed: &seed, scale: 3)
                    let results = bitsOnEveryLevel(format, stored, rows: rows, cols: cols, x, tokens: tokens, threads: 2)
                    for (level, r) in zip(levels, results) { XCTAssertEqual(r, results[0], "\(format) \(level) cols \(cols) tokens \(tokens)") }
                }
            }
        }
    }

    /// Every level's sums stay exact where they are largest: all levels and scales at their
    /// maximum against activations of -127 and of +127, the largest Q8_K makes (the AVX2
    /// kernel adds up to eight products of Q5_K's and four of Q6_K's levels in sixteen bits).
    /// Each row has its own scale, so rows mixed up would show; thirteen rows and three tokens
    /// take the eight-row and four-row passes and the single-row kernel, and each token alone
    /// the one-token kernel's four-row passes and its single row.
    func testSuperBlockSumsStayExactAtTheExtremes() {
        // Where each format keeps its f16 d and dmin (nil: none); every other byte is 0xFF.
        let scaleOffsets: [(TensorFormat, Int, Int?)] = [(.q2_K, 80, 82), (.q3_K, 108, nil), (.q4_K, 0, 2), (.q5_K, 0, 2), (.q6_K, 208, nil), (.iq4_XS, 0, nil)]
        let rows = 13, blocks = 3, cols = 256 * blocks
        // The value of largest magnitude (the first) quantizes to -127; equal magnitudes after
        // it to +127 or -127 by their sign.
        let tokens: [[Float]] = [[Float](repeating: -1, count: cols),
                                 [-1] + [Float](repeating: 1, count: cols - 1),
                                 (0..<cols).map { $0 % 3 == 0 ? -1 : 1 }]
        let x = tokens.flatMap { $0 }
        for (format, dAt, dminAt) in scaleOffsets {
            var stored: [UInt8] = []
            for r in 0..<rows {
                var block = [UInt8](repeating: 0xFF, count: format.blockBytes)
                let d = Float16(0.25 * Float(r + 1)).bitPattern, dmin = Float16(0.125).bitPattern
                block[dAt] = UInt8(d & 0xFF); block[dAt + 1] = UInt8(d >> 8)
                if let dminAt { block[dminAt] = UInt8(dmin & 0xFF); block[dminAt + 1] = UInt8(dmin >> 8) }
                for _ in 0..<blocks { stored += block }
            }
            let results = bitsOnEveryLevel(format, stored, rows: rows, cols: cols, x, tokens: tokens.count, threads: 1)
            for (level, r) in zip(levels, results) { XCTAssertEqual(r, results[0], "\(format) \(level)") }
            for (t, token) in tokens.enumerated() {
                let alone = bitsOnEveryLevel(format, stored, rows: rows, cols: cols, token, tokens: 1, threads: 1)
                for (level, r) in zip(levels, alone) { XCTAssertEqual(r, Array(results[0][(t * rows)..<((t + 1) * rows)]), "\(format) \(level) token \(t) alone") }
            }
        }
    }

    /// The C kernels find a format only through their table: a format without a row, or
    /// asked for with the other activation blocks, computes nothing and says so, on every
    /// level (never a neighbour's kernel).
    func testTheCKernelsRefuseFormatsWithoutAKernel() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            let weights = [UInt8](repeating: 0, count: 4096)
            var y = [Float](repeating: 7, count: 16)
            let q8 = [apus_q8_block](repeating: apus_q8_block(), count: 8)
            let q8k = [apus_q8k_block](repeating: apus_q8k_block(), count: 1)
            for format: Int32 in [-1, 0, 1, 9, 15, 21, 99, 100_000] {
                XCTAssertEqual(apus_matmul_q8(format, weights, 34, 0, 1, q8, 1, 1, &y, 1, 0), 0, "format \(format) at \(level)")
                XCTAssertEqual(apus_matmul_q8k(format, weights, 144, 0, 1, q8k, 1, 1, &y, 1, 0), 0, "format \(format) at \(level)")
            }
            XCTAssertEqual(apus_matmul_q8(Int32(APUS_Q4_K), weights, 144, 0, 1, q8, 1, 1, &y, 1, 0), 0, "Q4_K pairs with Q8_K, not Q8_0")
            XCTAssertEqual(apus_matmul_q8k(Int32(APUS_Q8_0), weights, 34, 0, 1, q8k, 1, 1, &y, 1, 0), 0, "Q8_0 pairs with Q8_0, not Q8_K")
            XCTAssertEqual(y, [Float](repeating: 7, count: 16), "nothing was written")
            let expected: Int32 = level == .portable ? 0 : 1
            XCTAssertEqual(apus_matmul_q8(Int32(APUS_Q8_0), weights, 34, 0, 1, q8, 1, 1, &y, 1, 0), expected, "Q8_0 runs at \(level)")
            XCTAssertEqual(apus_matmul_q8k(Int32(APUS_Q3_K), weights, 110, 0, 1, q8k, 1, 1, &y, 1, 0), expected, "Q3_K runs at \(level)")
        }
    }

    func testThisMachineUsesTheBestLevel() {
        XCTAssertEqual(IntegerKernels.level, IntegerKernels.available)
    }

    func testDotMatchesMatMul() {
        var seed: UInt64 = 5
        let x = Reference.randomValues(96, seed: &seed)
        let w = Reference.randomValues(96, seed: &seed)
        let stored = Quantization.quantize(w, format: .q5_1)
        let expected = Reference.matmulInt8(format: .q5_1, rows: [stored], cols: 96, [x])[0][0]
        let got = stored.withUnsafeBytes { MatMul.dot($0.baseAddress!, format: .q5_1, x, count: 96, precision: .int8) }
        XCTAssertEqual(Double(got), expected, accuracy: 1e-4)
    }
}
