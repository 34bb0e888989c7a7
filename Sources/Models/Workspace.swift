import Kernels

/// The activation buffers of a forward pass, sized for the largest batch seen so far.
final class Workspace {
    struct Buffers {
        let x, normed, q, k, v, attended, gate, up: FloatBuffer
        /// RoPE cosines and sines per token, shared by every layer.
        let angles: FloatBuffer
    }

    private var capacity = 0
    private var buffers: Buffers?
    var scratch = PreparedActivations()

    deinit { scratch.release() }

    /// Buffers for at least `tokens` rows; reallocated only when the batch grows.
    func reserve(tokens: Int, hyperparameters hp: Llama.Hyperparameters) -> Buffers {
        if let buffers, tokens <= capacity { return buffers }
        let n = max(tokens, 1)
        let fresh = Buffers(
            x: FloatBuffer(n * hp.width), normed: FloatBuffer(n * hp.width), q: FloatBuffer(n * hp.width),
            k: FloatBuffer(n * hp.kvWidth), v: FloatBuffer(n * hp.kvWidth), attended: FloatBuffer(n * hp.width),
            gate: FloatBuffer(n * hp.feedForwardWidth), up: FloatBuffer(n * hp.feedForwardWidth), angles: FloatBuffer(n * hp.headDim))
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
