/// The orthonormal Walsh–Hadamard transform of each head, the rotation a quantized KV cache
/// stores its keys and values in (QuaRot, Ashkboos et al. 2024; llama.cpp rotates Q, K and V
/// the same way whenever its cache is quantized).
///
/// A few channels of a head's keys can be a hundred times the rest (Qwen2.5's key biases
/// put them there), and one such channel sets the scale of its whole 32-value block, so a
/// plain Q8_0 or Q4_0 block rounds every other channel to almost nothing. The rotation
/// spreads each channel over all of them. Because it is orthonormal it changes no dot
/// product (`Hq · Hk = q · k`), and because it is linear the attention output over rotated
/// values is the rotated output (`Σ pᵢ Hvᵢ = H Σ pᵢ vᵢ`); normalised by `1/√n` it is its own
/// inverse, so the same call rotates back.
public enum Hadamard {
    /// The transform's size for heads of `headDim` values: the largest power of two dividing
    /// it (the whole head for every power-of-two head size), so each head is rotated in
    /// `headDim / size` independent pieces.
    public static func size(headDim: Int) -> Int { headDim & -headDim }

    /// Rotates `count` vectors of `headDim` values in place (`headDim / size` transforms each).
    /// Butterflies in a fixed order, so a row gets the same bits wherever it is.
    public static func rotate(_ x: UnsafeMutablePointer<Float>, heads count: Int, headDim: Int) {
        let n = size(headDim: headDim), scale = 1 / Float(n).squareRoot()
        for piece in stride(from: 0, to: count * headDim, by: n) {
            let v = x + piece
            var half = 1
            while half < n {
                for start in stride(from: 0, to: n, by: 2 * half) {
                    if half >= 16 {
                        for i in stride(from: start, to: start + half, by: 16) {
                            let a = UnsafeRawPointer(v + i).loadUnaligned(as: SIMD16<Float>.self)
                            let b = UnsafeRawPointer(v + i + half).loadUnaligned(as: SIMD16<Float>.self)
                            UnsafeMutableRawPointer(v + i).storeBytes(of: a + b, as: SIMD16<Float>.self)
                            UnsafeMutableRawPointer(v + i + half).storeBytes(of: a - b, as: SIMD16<Float>.self)
                        }
                    } else {
                        for i in start..<(start + half) {
                            let a = v[i], b = v[i + half]
                            v[i] = a + b
                            v[i + half] = a - b
                        }
                    }
                }
                half *= 2
            }
            for i in 0..<n { v[i] *= scale }
        }
    }
}
