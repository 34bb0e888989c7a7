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

    /// The cosine and sine of every rotation angle for `position`, interleaved (`headDim`
    /// floats). Angles follow ggml: `θ_i = position · base^(-2i/d)`, the power taken step by
    /// step in fp32. They depend on the position only, so a forward pass computes them once
    /// for all layers.
    ///
    /// `factors` (Llama 3's `rope_freqs`, one per pair) divide each angle, as ggml's
    /// `freq_factors` do.
    public static func angles(position: Int, headDim: Int, base: Float, factors: UnsafePointer<Float>? = nil,
                              into table: UnsafeMutablePointer<Float>) {
        let scale = powf(base, -2 / Float(headDim))
        var theta = Float(position)
        for i in 0..<(headDim / 2) {
            let angle = factors.map { theta / $0[i] } ?? theta
            table[2 * i] = cosf(angle)
            table[2 * i + 1] = sinf(angle)
            theta *= scale
        }
    }

    /// Rotates each of `heads` vectors of `headDim` values in place for position `position`.
    public static func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int,
                             base: Float, layout: Layout) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: headDim) { table in
            angles(position: position, headDim: headDim, base: base, into: table.baseAddress!)
            apply(x, heads: heads, headDim: headDim, angles: table.baseAddress!, layout: layout)
        }
    }

    /// Rotates in place with precomputed `angles` (see `angles(position:headDim:base:into:)`).
    public static func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, angles: UnsafePointer<Float>, layout: Layout) {
        rotate(x, heads: heads, headDim: headDim, angles: angles, layout: layout) { i, value in x[i] = value }
    }

    /// Rotates `x` and writes the result as f16 into `cache`: keys go into the KV cache in the
    /// same pass that rotates them.
    public static func applyStoringF16(_ x: UnsafePointer<Float>, heads: Int, headDim: Int, angles: UnsafePointer<Float>,
                                       layout: Layout, into cache: UnsafeMutablePointer<Float16>) {
        rotate(x, heads: heads, headDim: headDim, angles: angles, layout: layout) { i, value in cache[i] = Float16(value) }
    }

    @inline(__always)
    static func rotate(_ x: UnsafePointer<Float>, heads: Int, headDim: Int, angles: UnsafePointer<Float>, layout: Layout,
                       store: (Int, Float) -> Void) {
        let half = headDim / 2
        for i in 0..<half {
            let c = angles[2 * i], s = angles[2 * i + 1]
            for h in 0..<heads {
                let (a, b) = layout == .normal ? (h * headDim + 2 * i, h * headDim + 2 * i + 1) : (h * headDim + i, h * headDim + i + half)
                let x0 = x[a], x1 = x[b]
                store(a, x0 * c - x1 * s)
                store(b, x0 * s + x1 * c)
            }
        }
    }
}
