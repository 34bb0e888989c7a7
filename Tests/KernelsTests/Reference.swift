import Foundation
@testable import Kernels

/// Plain scalar twins of the kernels, written for clarity, not speed.
enum Reference {
    static func randomValues(_ count: Int, seed: inout UInt64, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return (Float(seed >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
    }

    /// `y[t][r] = Σ_c x[t][c] · W[r][c]` in double over dequantized weights.
    static func matmulFloat(_ weights: [[Float]], _ x: [[Float]]) -> [[Double]] {
        x.map { row in weights.map { w in zip(w, row).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } } }
    }

    /// llama.cpp's x86 activation quantization of one block, written independently.
    static func quantizeActivationBlock(_ x: ArraySlice<Float>) -> (q: [Int], d: Float, s: Float) {
        let amax = x.map(abs).max()!
        let d = amax / 127
        let id: Float = amax == 0 ? 0 : 127 / amax
        let q = x.map { Int(($0 * id).rounded(.toNearestOrEven)) }
        let sum = Float(q.reduce(0, +))
        return (q, Float(Float16(d)), Float(Float16(d * sum)))
    }

    /// llama.cpp's Q8_K quantization of a row (256 per block; the value of largest
    /// magnitude maps to -127), written independently, and decoded back to floats.
    static func roundTripQ8K(_ x: [Float]) -> [Float] {
        var out: [Float] = []
        for b in stride(from: 0, to: x.count, by: 256) {
            let block = x[b..<(b + 256)]
            guard let max = block.max(by: { abs($0) < abs($1) }), max != 0 else { out += block.map { _ in 0 }; continue }
            let iscale = -127 / max
            out += block.map { Float(min(127, Int(($0 * iscale).rounded(.toNearestOrEven)))) * (1 / iscale) }
        }
        return out
    }

    /// The int8 path: per block `d_w · d_a · Σ q_w q_a + m_w · s_a`, integer inner sums.
    static func matmulInt8(format: TensorFormat, rows: [[UInt8]], cols: Int, _ x: [[Float]]) -> [[Double]] {
        x.map { xrow in
            rows.map { wrow in
                var total = 0.0
                for b in 0..<(cols / 32) {
                    let a = quantizeActivationBlock(xrow[(32 * b)..<(32 * b + 32)])
                    let (qw, dw, mw) = integerBlock(format, Array(wrow[(b * format.blockBytes)..<((b + 1) * format.blockBytes)]))
                    let isum = zip(qw, a.q).reduce(0) { $0 + $1.0 * $1.1 }
                    total += Double(dw * a.d) * Double(isum) + Double(mw * (format.activationPartner == .q8_1 ? a.s : 0))
                }
                return total
            }
        }
    }

    /// A block's integer weights (offset applied), scale and minimum, decoded bit by bit.
    static func integerBlock(_ format: TensorFormat, _ b: [UInt8]) -> ([Int], Float, Float) {
        func f16(_ i: Int) -> Float { Float(Float16(bitPattern: UInt16(b[i]) | UInt16(b[i + 1]) << 8)) }
        func u32(_ i: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[i + $1]) << (8 * $1) } }
        var q = [Int](repeating: 0, count: 32)
        switch format {
        case .q8_0:
            for j in 0..<32 { q[j] = Int(Int8(bitPattern: b[2 + j])) }
            return (q, f16(0), 0)
        case .q4_0, .q4_1, .q5_0, .q5_1:
            let hasMin = format == .q4_1 || format == .q5_1
            let five = format == .q5_0 || format == .q5_1
            let qh = five ? u32(hasMin ? 4 : 2) : 0
            let qs = (hasMin ? 4 : 2) + (five ? 4 : 0)
            for j in 0..<16 {
                q[j] = Int(b[qs + j] & 15) | Int((qh >> j) & 1) << 4
                q[j + 16] = Int(b[qs + j] >> 4) | Int((qh >> (j + 16)) & 1) << 4
            }
            let offset = hasMin ? 0 : (five ? 16 : 8)
            return (q.map { $0 - offset }, f16(0), hasMin ? f16(2) : 0)
        case .iq4_NL:
            // ggml's kvalues_iq4nl, indexed by Q4_0-ordered nibbles.
            let levels = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
            for j in 0..<16 {
                q[j] = levels[Int(b[2 + j] & 15)]
                q[j + 16] = levels[Int(b[2 + j] >> 4)]
            }
            return (q, f16(0), 0)
        default:
            fatalError("not a block format")
        }
    }
}
