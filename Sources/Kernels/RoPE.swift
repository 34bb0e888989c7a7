import Foundation

/// Rotary position embedding (Su et al. 2021, RoFormer).
public enum RoPE {
    /// Which pairs of a head's dimensions rotate together.
    public enum Layout: Sendable {
        /// Adjacent pairs `(2i, 2i+1)`: the original Llama layout as llama.cpp stores it.
        case normal
        /// Halves `(i, i + d/2)`: GPT-NeoX, Qwen2.
        case neox
    }

    /// Rotates each of `heads` vectors of `headDim` values in place for position `position`.
    /// Angles follow ggml: `θ_i = position · base^(-2i/d)`, the power taken step by step
    /// in fp32.
    public static func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int,
                             base: Float, layout: Layout) {
        rotate(x, heads: heads, headDim: headDim, position: position, base: base, layout: layout) { i, value in x[i] = value }
    }

    /// Rotates `x` and writes the result as f16 into `cache`: keys go into the KV cache in the
    /// same pass that rotates them.
    public static func applyStoringF16(_ x: UnsafePointer<Float>, heads: Int, headDim: Int, position: Int, base: Float,
                                       layout: Layout, into cache: UnsafeMutablePointer<Float16>) {
        rotate(x, heads: heads, headDim: headDim, position: position, base: base, layout: layout) { i, value in cache[i] = Float16(value) }
    }

    @inline(__always)
    static func rotate(_ x: UnsafePointer<Float>, heads: Int, headDim: Int, position: Int, base: Float, layout: Layout,
                       store: (Int, Float) -> Void) {
        let half = headDim / 2
        let scale = powf(base, -2 / Float(headDim))
        var theta = Float(position)
        for i in 0..<half {
            let c = cosf(theta), s = sinf(theta)
            for h in 0..<heads {
                let (a, b) = layout == .normal ? (h * headDim + 2 * i, h * headDim + 2 * i + 1) : (h * headDim + i, h * headDim + i + half)
                let x0 = x[a], x1 = x[b]
                store(a, x0 * c - x1 * s)
                store(b, x0 * s + x1 * c)
            }
            theta *= scale
        }
    }
}
