import Kernels

/// The activation buffers of a forward pass, sized for the largest batch seen so far.
final class Workspace {
    struct Buffers {
        /// The residual stream, a normed copy, and a layer's output before it joins the stream.
        let x, normed, projected: FloatBuffer
        let q, k, v, attended: FloatBuffer
        let gate, up: FloatBuffer
    }

    private var capacity = 0
    private var buffers: Buffers?
    var scratch = PreparedActivations()

    deinit { scratch.release() }

    /// Buffers for at least `tokens` rows; reallocated only when the batch grows.
    func reserve(tokens: Int, shape: TransformerShape) -> Buffers {
        if let buffers, tokens <= capacity { return buffers }
        let n = max(tokens, 1)
        let fresh = Buffers(
            x: FloatBuffer(n * shape.width), normed: FloatBuffer(n * shape.width), projected: FloatBuffer(n * shape.width),
            q: FloatBuffer(n * shape.queryWidth), k: FloatBuffer(n * shape.kvWidth), v: FloatBuffer(n * shape.kvWidth),
            attended: FloatBuffer(n * shape.queryWidth),
            gate: FloatBuffer(n * shape.feedForwardWidth), up: FloatBuffer(n * shape.feedForwardWidth))
        buffers = fresh
        capacity = n
        return fresh
    }
}

/// A heap buffer of floats with a fixed size, freed with its owner.
final class FloatBuffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { pointer.deallocate() }
}
