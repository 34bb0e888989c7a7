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
        let half = headDim / 2
        let scale = powf(base, -2 / Float(headDim))
        var theta = Float(position)
        for i in 0..<half {
            let c = cosf(theta), s = sinf(theta)
            for h in 0..<heads {
                let v = x + h * headDim
                let (a, b) = layout == .normal ? (2 * i, 2 * i + 1) : (i, i + half)
                let x0 = v[a], x1 = v[b]
                v[a] = x0 * c - x1 * s
                v[b] = x0 * s + x1 * c
            }
            theta *= scale
        }
    }
}
