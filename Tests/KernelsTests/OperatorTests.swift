import Foundation
@testable import Kernels
import TestSupport
import XCTest

final class OperatorTests: XCTestCase {
    func testRMSNorm() {
        var seed: UInt64 = 3
        let x = Reference.randomValues(77, seed: &seed, scale: 4)
        let w = Reference.randomValues(77, seed: &seed)
        var y = [Float](repeating: 0, count: 77)
        Norm.rms(x, weight: w, count: 77, eps: 1e-5, into: &y)
        let rms = (x.reduce(0.0) { $0 + Double($1 * $1) } / 77 + 1e-5).squareRoot()
        for i in 0..<77 { XCTAssertEqual(Double(y[i]), Double(x[i]) / rms * Double(w[i]), accuracy: 1e-5) }
    }

    func testRoPEBothLayouts() {
        var seed: UInt64 = 4
        let heads = 3, d = 10, position = 37
        let base: Float = 10000
        for layout in [RoPE.Layout.normal, .neox] {
            let x = Reference.randomValues(heads * d, seed: &seed)
            var y = x
            RoPE.apply(&y, heads: heads, headDim: d, position: position, base: base, layout: layout)
            for h in 0..<heads {
                for i in 0..<(d / 2) {
                    let theta = Double(position) * pow(Double(base), -2 * Double(i) / Double(d))
                    let (a, b) = layout == .normal ? (h * d + 2 * i, h * d + 2 * i + 1) : (h * d + i, h * d + i + d / 2)
                    XCTAssertEqual(Double(y[a]), Double(x[a]) * cos(theta) - Double(x[b]) * sin(theta), accuracy: 2e-4, "\(layout) \(h) \(i)")
                    XCTAssertEqual(Double(y[b]), Double(x[a]) * sin(theta) + Double(x[b]) * cos(theta), accuracy: 2e-4, "\(layout) \(h) \(i)")
                }
            }
        }
    }

    /// Against the Hadamard matrix written out (`H[i][j] = (-1)^popcount(i & j) / √n`) in
    /// doubles, on head sizes whose transform is the whole head (64, 256) or a piece of it
    /// (96 = 3 × 32, 160 = 5 × 32); twice is the identity.
    func testHadamardRotationIsTheOrthonormalMatrixAndItsOwnInverse() {
        var seed: UInt64 = 9
        for (d, n) in [(64, 64), (96, 32), (160, 32), (256, 256)] {
            XCTAssertEqual(Hadamard.size(headDim: d), n)
            let heads = 3
            let x = Reference.randomValues(heads * d, seed: &seed, scale: 4)
            var y = x
            y.withUnsafeMutableBufferPointer { Hadamard.rotate($0.baseAddress!, heads: heads, headDim: d) }
            for piece in stride(from: 0, to: heads * d, by: n) {
                for i in 0..<n {
                    let expected = (0..<n).reduce(0.0) { sum, j in
                        sum + ((i & j).nonzeroBitCount % 2 == 0 ? 1 : -1) * Double(x[piece + j])
                    } / Double(n).squareRoot()
                    XCTAssertEqual(Double(y[piece + i]), expected, accuracy: 1e-4, "d \(d) at \(piece + i)")
                }
            }
            y.withUnsafeMutableBufferPointer { Hadamard.rotate($0.baseAddress!, heads: heads, headDim: d) }
            for i in 0..<(heads * d) { XCTAssertEqual(y[i], x[i], accuracy: 1e-5, "d \(d) back at \(i)") }
        }
    }

    func testSoftmaxAndSiLU() {
        var x: [Float] = [1, 2, 3, -1000, 0.5]
        Activation.softmax(&x, count: 5)
        let e = [1.0, 2, 3, -1000, 0.5].map { exp($0 - 3) }
        let s = e.reduce(0, +)
        for i in 0..<5 { XCTAssertEqual(Double(x[i]), e[i] / s, accuracy: 1e-6) }
        XCTAssertEqual(Activation.silu(2), Float(2 / (1 + exp(-2.0))), accuracy: 1e-6)
        var gate: [Float] = [1, -2, 0.5]
        Activation.swiglu(gate: &gate, up: [2, 3, -1], count: 3)
        XCTAssertEqual(gate[1], Activation.silu(-2) * 3, accuracy: 1e-6)
    }

    /// SwiGLU against a double-precision reference on every path, over gates from -100 to
    /// 100 (where e^-g overflows and underflows) and an awkward length.
    func testSwiGLUOnEveryPathMatchesDoublePrecision() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        let count = 1037
        let gates = (0..<count).map { Float(-100 + 200 * Double($0) / Double(count - 1)) }
        var seed: UInt64 = 5
        let up = Reference.randomValues(count, seed: &seed)
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            var gate = gates
            Activation.swiglu(gate: &gate, up: up, count: count)
            for i in 0..<count {
                let g = Double(gates[i])
                let expected = g / (1 + exp(-g)) * Double(up[i])
                XCTAssertEqual(Double(gate[i]), expected, accuracy: abs(expected) * 1e-6 + 1e-36, "\(level) gate \(gates[i])")
            }
        }
    }

    /// Grouped-query attention over a paged cache against a naive double-precision
    /// reference: a ragged batch of two sequences whose blocks (of an awkward size) lie
    /// shuffled in the pool. Queries are rounded to f16 in both; the rest is f32 in the
    /// kernel, hence the tolerance.
    func testPagedCausalAttentionWithGQAOnEveryPath() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            for d in [10, 64, 80, 256] { checkAttention(headDim: d) }  // 256: Gemma 3
        }
    }

    /// Contiguous keys and values of several sequences scattered over a pool of blocks in a
    /// shuffled order, with each sequence's block table.
    struct PagedFixture {
        var keys: [Float16]
        var values: [Float16]
        var tables: [[Int32]]
        let blockSize: Int

        init(keys: [[Float16]], values: [[Float16]], rowWidth: Int, blockSize: Int, shuffleSeed: UInt64?) {
            self.blockSize = blockSize
            let counts = keys.map { ($0.count / rowWidth + blockSize - 1) / blockSize }
            var order = Array(0..<counts.reduce(0, +)).map(Int32.init)
            if let shuffleSeed {
                var g = SplitMix(shuffleSeed)
                order.shuffle(using: &g)
            }
            self.keys = [Float16](repeating: .nan, count: order.count * blockSize * rowWidth)
            self.values = self.keys
            tables = []
            var next = 0
            for (s, n) in counts.enumerated() {
                let table = Array(order[next..<(next + n)])
                next += n
                tables.append(table)
                for p in 0..<(keys[s].count / rowWidth) {
                    let row = Int(table[p / blockSize]) * blockSize + p % blockSize
                    for i in 0..<rowWidth {
                        self.keys[row * rowWidth + i] = keys[s][p * rowWidth + i]
                        self.values[row * rowWidth + i] = values[s][p * rowWidth + i]
                    }
                }
            }
        }

        /// Runs attention for `queries` (row, sequence, position) and returns the output.
        func attend(_ q: [Float], _ queries: [(row: Int, sequence: Int, position: Int)], shape: Attention.Shape, threads: Int) -> [Float] {
            var out = [Float](repeating: 0, count: q.count)
            let tables = self.tables.map { table in
                let p = UnsafeMutablePointer<Int32>.allocate(capacity: table.count)
                p.initialize(from: table, count: table.count)
                return p
            }
            defer { tables.forEach { $0.deallocate() } }
            keys.withUnsafeBufferPointer { k in
                values.withUnsafeBufferPointer { v in
                    let batch = queries.map { Attention.Query(row: $0.row, position: $0.position, blockTable: tables[$0.sequence]) }
                    batch.withUnsafeBufferPointer { b in
                        Attention.causal(queries: q, batch: b, cache: .init(keys: k.baseAddress!, values: v.baseAddress!, blockSize: blockSize),
                                         shape: shape, into: &out, pool: ThreadPool(threads: threads))
                    }
                }
            }
            return out
        }
    }

    /// Naive attention of one query head over `0...position` of contiguous keys and values.
    func referenceAttention(q: ArraySlice<Float>, keys k: [Float16], values v: [Float16], position: Int, head h: Int, heads: Int, kvHeads: Int, d: Int) -> [Double] {
        let g = h / (heads / kvHeads)
        let qs = Array(q)
        let scores = (0...position).map { p in
            (0..<d).reduce(0.0) { $0 + Double(Float(Float16(qs[$1]))) * Double(Float(k[p * kvHeads * d + g * d + $1])) } / Double(d).squareRoot()
        }
        let m = scores.max()!
        let w = scores.map { exp($0 - m) }
        let z = w.reduce(0, +)
        return (0..<d).map { i in (0...position).reduce(0.0) { $0 + w[$1] / z * Double(Float(v[$1 * kvHeads * d + g * d + i])) } }
    }

    func checkAttention(headDim d: Int) {
        var seed: UInt64 = 6
        let heads = 6, kvHeads = 2
        let lengths = [7, 23]
        let keys = lengths.map { n in Reference.randomValues(n * kvHeads * d, seed: &seed).map { Float16($0) } }
        let values = lengths.map { n in Reference.randomValues(n * kvHeads * d, seed: &seed).map { Float16($0) } }
        let fixture = PagedFixture(keys: keys, values: values, rowWidth: kvHeads * d, blockSize: 5, shuffleSeed: 3)
        // Sequence 0 prefills its last three positions, sequence 1 decodes its last.
        let queries = [(row: 0, sequence: 0, position: 4), (row: 1, sequence: 1, position: 22), (row: 2, sequence: 0, position: 5), (row: 3, sequence: 0, position: 6)]
        let q = Reference.randomValues(queries.count * heads * d, seed: &seed)
        let out = fixture.attend(q, queries, shape: .init(heads: heads, kvHeads: kvHeads, headDim: d), threads: 2)
        for query in queries {
            for h in 0..<heads {
                let base = query.row * heads * d + h * d
                let expected = referenceAttention(q: q[base..<(base + d)], keys: keys[query.sequence], values: values[query.sequence],
                                                  position: query.position, head: h, heads: heads, kvHeads: kvHeads, d: d)
                for i in 0..<d {
                    XCTAssertEqual(Double(out[base + i]), expected[i], accuracy: 2e-5, "\(IntegerKernels.level) d \(d) row \(query.row) h \(h) i \(i)")
                }
            }
        }
    }

    /// Past one chunk of positions, a decoded token (split over threads by chunk) gets
    /// bitwise the result the same query gets inside a batch, whether its blocks are
    /// scattered or contiguous, and matches the reference.
    func testSplitKVDecodeMatchesTheBatchAndTheReference() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        var seed: UInt64 = 8
        let heads = 4, kvHeads = 2, d = 16, positions = 2 * Attention.chunkPositions + 77
        let shape = Attention.Shape(heads: heads, kvHeads: kvHeads, headDim: d)
        let k = Reference.randomValues(positions * kvHeads * d, seed: &seed).map { Float16($0) }
        let v = Reference.randomValues(positions * kvHeads * d, seed: &seed).map { Float16($0) }
        let batch = 3
        let q = Reference.randomValues(batch * heads * d, seed: &seed, scale: 3)
        let scattered = PagedFixture(keys: [k], values: [v], rowWidth: kvHeads * d, blockSize: 7, shuffleSeed: 11)
        let contiguous = PagedFixture(keys: [k], values: [v], rowWidth: kvHeads * d, blockSize: positions, shuffleSeed: nil)
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            let batched = scattered.attend(q, (0..<batch).map { (row: $0, sequence: 0, position: positions - batch + $0) }, shape: shape, threads: 2)
            let last = Array(q[((batch - 1) * heads * d)...])
            let single = scattered.attend(last, [(row: 0, sequence: 0, position: positions - 1)], shape: shape, threads: 3)
            let singleContiguous = contiguous.attend(last, [(row: 0, sequence: 0, position: positions - 1)], shape: shape, threads: 1)
            XCTAssertEqual(single.map(\.bitPattern), batched[((batch - 1) * heads * d)...].map(\.bitPattern), "\(level)")
            XCTAssertEqual(single.map(\.bitPattern), singleContiguous.map(\.bitPattern), "\(level)")
            for h in 0..<heads {
                let expected = referenceAttention(q: last[(h * d)..<((h + 1) * d)], keys: k, values: v, position: positions - 1,
                                                  head: h, heads: heads, kvHeads: kvHeads, d: d)
                for i in 0..<d {
                    XCTAssertEqual(Double(single[h * d + i]), expected[i], accuracy: 2e-5, "\(level) h \(h) i \(i)")
                }
            }
        }
    }
}

extension OperatorTests {
    /// A sliding window sees exactly the last `window` positions: the same result as full
    /// attention over a cache holding only those positions.
    func testSlidingWindowSeesOnlyTheLastPositions() {
        var seed: UInt64 = 31
        let shape = Attention.Shape(heads: 4, kvHeads: 2, headDim: 32)
        let positions = 40, window = 9
        let keys = Reference.randomValues(positions * shape.kvStride, seed: &seed).map { Float16($0) }
        let values = Reference.randomValues(positions * shape.kvStride, seed: &seed).map { Float16($0) }
        let q = Reference.randomValues(shape.heads * shape.headDim, seed: &seed, scale: 2)
        let windowed = Attention.Shape(heads: 4, kvHeads: 2, headDim: 32, window: window)
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            defer { IntegerKernels.limit(to: .avx512vnni) }
            for p in [3, 8, 9, 25, 39] {
                let first = max(0, p + 1 - window)
                var got = [Float](repeating: 0, count: q.count), expected = got
                let table = (0..<Int32(positions)).map { $0 }
                let tail = Array(first...p)
                keys.withUnsafeBufferPointer { k in values.withUnsafeBufferPointer { v in table.withUnsafeBufferPointer { t in
                    let full = Attention.PagedLayer(keys: k.baseAddress!, values: v.baseAddress!, blockSize: 1)
                    var query = [Attention.Query(row: 0, position: p, blockTable: t.baseAddress!)]
                    query.withUnsafeBufferPointer { Attention.causal(queries: q, batch: $0, cache: full, shape: windowed, into: &got, pool: ThreadPool(threads: 2)) }
                    // Only the window's rows, renumbered from 0.
                    let k2 = tail.flatMap { Array(keys[($0 * shape.kvStride)..<(($0 + 1) * shape.kvStride)]) }
                    let v2 = tail.flatMap { Array(values[($0 * shape.kvStride)..<(($0 + 1) * shape.kvStride)]) }
                    k2.withUnsafeBufferPointer { k2 in v2.withUnsafeBufferPointer { v2 in
                        let cut = Attention.PagedLayer(keys: k2.baseAddress!, values: v2.baseAddress!, blockSize: 1)
                        query = [Attention.Query(row: 0, position: tail.count - 1, blockTable: t.baseAddress!)]
                        query.withUnsafeBufferPointer { Attention.causal(queries: q, batch: $0, cache: cut, shape: shape, into: &expected, pool: ThreadPool(threads: 2)) }
                    } }
                } } }
                for i in got.indices { XCTAssertEqual(got[i], expected[i], accuracy: 1e-6, "\(level) position \(p) value \(i)") }
            }
        }
    }
}
