import Foundation
@testable import Kernels
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

    /// Grouped-query attention against a naive double-precision reference. The kernel keeps
    /// its running sum of values in f16, as llama.cpp's does, hence the f16-sized tolerance.
    func testCausalAttentionWithGQAOnEveryPath() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            for d in [10, 64, 80] { checkAttention(headDim: d) }
        }
    }

    func checkAttention(headDim d: Int) {
        var seed: UInt64 = 6
        let heads = 6, kvHeads = 2, first = 4, tokens = 3
        let positions = first + tokens
        let q = Reference.randomValues(tokens * heads * d, seed: &seed)
        let kf = Reference.randomValues(positions * kvHeads * d, seed: &seed)
        let vf = Reference.randomValues(positions * kvHeads * d, seed: &seed)
        let k = kf.map { Float16($0) }, v = vf.map { Float16($0) }
        var out = [Float](repeating: 0, count: tokens * heads * d)
        Attention.causal(queries: q, tokens: tokens, firstPosition: first, keys: k, values: v,
                         shape: .init(heads: heads, kvHeads: kvHeads, headDim: d), into: &out, pool: ThreadPool(threads: 2))
        for t in 0..<tokens {
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                let visible = first + t + 1
                let scores = (0..<visible).map { p in
                    (0..<d).reduce(0.0) { $0 + Double(Float(Float16(q[t * heads * d + h * d + $1]))) * Double(Float(k[p * kvHeads * d + g * d + $1])) } / Double(d).squareRoot()
                }
                let m = scores.max()!
                let w = scores.map { exp($0 - m) }
                let z = w.reduce(0, +)
                for i in 0..<d {
                    let expected = (0..<visible).reduce(0.0) { $0 + w[$1] / z * Double(Float(v[$1 * kvHeads * d + g * d + i])) }
                    XCTAssertEqual(Double(out[t * heads * d + h * d + i]), expected, accuracy: 2e-3, "\(IntegerKernels.level) d \(d) t \(t) h \(h) i \(i)")
                }
            }
        }
    }

    /// Past one chunk of positions, a decoded token (split over threads by chunk) gets
    /// bitwise the result the same query gets inside a batch, and both match the reference.
    func testSplitKVDecodeMatchesTheBatchAndTheReference() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        var seed: UInt64 = 8
        let heads = 4, kvHeads = 2, d = 16, positions = 2 * Attention.chunkPositions + 77
        let shape = Attention.Shape(heads: heads, kvHeads: kvHeads, headDim: d)
        let k = Reference.randomValues(positions * kvHeads * d, seed: &seed).map { Float16($0) }
        let v = Reference.randomValues(positions * kvHeads * d, seed: &seed).map { Float16($0) }
        let batch = 3
        let q = Reference.randomValues(batch * heads * d, seed: &seed, scale: 3)
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            var batched = [Float](repeating: 0, count: batch * heads * d)
            Attention.causal(queries: q, tokens: batch, firstPosition: positions - batch, keys: k, values: v, shape: shape, into: &batched, pool: ThreadPool(threads: 2))
            var single = [Float](repeating: 0, count: heads * d)
            Array(q[((batch - 1) * heads * d)...]).withUnsafeBufferPointer { last in
                Attention.causal(queries: last.baseAddress!, tokens: 1, firstPosition: positions - 1, keys: k, values: v, shape: shape, into: &single, pool: ThreadPool(threads: 3))
            }
            XCTAssertEqual(single.map(\.bitPattern), batched[((batch - 1) * heads * d)...].map(\.bitPattern), "\(level)")
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                let scores = (0..<positions).map { p in
                    (0..<d).reduce(0.0) { $0 + Double(Float(Float16(q[(batch - 1) * heads * d + h * d + $1]))) * Double(Float(k[p * kvHeads * d + g * d + $1])) } / Double(d).squareRoot()
                }
                let m = scores.max()!
                let w = scores.map { exp($0 - m) }
                let z = w.reduce(0, +)
                for i in 0..<d {
                    let expected = (0..<positions).reduce(0.0) { $0 + w[$1] / z * Double(Float(v[$1 * kvHeads * d + g * d + i])) }
                    XCTAssertEqual(Double(single[h * d + i]), expected, accuracy: 3e-3, "\(level) h \(h) i \(i)")
                }
            }
        }
    }
}
