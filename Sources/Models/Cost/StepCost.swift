import Foundation
import Kernels

/// One decode step: `sequences` sequences each add one token, attending to `context`
/// positions (their cache plus the new one).
public struct StepShape: Sendable, Equatable {
    public var sequences: Int
    public var context: Int

    public init(sequences: Int, context: Int) {
        self.sequences = sequences
        self.context = context
    }
}

/// The arithmetic and memory traffic of one operation of a step, and the roof that bounds
/// its arithmetic: a quantized matrix kernel (per weight format and shape) or the vector units.
public struct OperationCost: Sendable, Equatable {
    public enum Unit: Sendable, Hashable {
        case matrix(MatrixRoof)
        case vector
        /// The sampler over this many logits (scalar code with a measured roof of its own).
        case sampler(logits: Int)
        /// Attention of `shape`'s heads over this many (query head, position) pairs: an online
        /// softmax whose per-position recurrence, not the FMA units, sets its pace on a CPU, so
        /// its arithmetic has a measured roof of its own.
        case attention(AttentionRoof, headPositions: Int)
    }

    public let operation: StepOperation
    public let unit: Unit
    /// Floating-point (or integer multiply-add, counted as two) operations.
    public var flops: Double
    /// Bytes read from and written to memory, each counted once (weights, KV cache, activations).
    public var bytes: Double
    /// Tokens sharing one pass over a matrix's weights (the kernel's batch width).
    public var tokens: Int
    /// Spread over every thread (else it runs on one: too small to split).
    public var parallel: Bool
    /// Thread-pool passes it takes.
    public var dispatches: Int

    public init(_ operation: StepOperation, unit: Unit, flops: Double, bytes: Double, tokens: Int, parallel: Bool = true, dispatches: Int = 0) {
        self.operation = operation
        self.unit = unit
        self.flops = flops
        self.bytes = bytes
        self.tokens = tokens
        self.parallel = parallel
        self.dispatches = dispatches
    }
}

/// Builds a step's costs layer by layer, in the terms of `ForwardPass`'s operations.
struct StepCostBuilder {
    let shape: TransformerShape
    let step: StepShape
    /// How the KV cache stores keys and values: bytes read per cached value, and for a
    /// quantized cache the rotations and encoding of the cache write.
    let kvType: KVCacheType
    private(set) var costs: [OperationCost] = []

    init(shape: TransformerShape, step: StepShape, kvType: KVCacheType) {
        self.shape = shape
        self.step = step
        self.kvType = kvType
    }

    var tokens: Int { step.sequences }

    /// `tokens` rows times `w`ᵀ: every weight read once, each input row read and each output
    /// row written once as fp32 (added to what is there with `accumulate`). The first
    /// product of a group over one input (Q, K, V; gate, up) carries the group's pool
    /// passes: the rows, and the activations' conversion once it splits (past 8 rows).
    mutating func matrix(_ op: StepOperation, _ w: WeightMatrix, accumulate: Bool = false, first: Bool = true) {
        let t = Double(tokens)
        let weights = Double(w.rows * w.rowBytes)
        let activations = t * Double(w.cols) * 4 + t * Double(w.rows) * 4 * (accumulate ? 2 : 1)
        costs.append(OperationCost(op, unit: .matrix(MatrixRoof(format: w.format, rows: w.rows, cols: w.cols)), flops: 2 * t * Double(w.rows) * Double(w.cols), bytes: weights + activations,
                                   tokens: tokens, dispatches: first ? (tokens > 8 ? 2 : 1) : 0))
    }

    /// A vector operation over `items` independent pieces, split over the pool in chunks of
    /// `chunk` as `ForwardPass` splits it (nil: never split).
    mutating func vector(_ op: StepOperation, flops: Double, bytes: Double, items: Int = 0, chunk: Int? = nil) {
        let parallel = chunk.map { items > $0 } ?? false
        costs.append(OperationCost(op, unit: .vector, flops: flops, bytes: bytes, tokens: tokens, parallel: parallel, dispatches: parallel ? 1 : 0))
    }

    mutating func embedding(_ table: WeightMatrix, scaled: Bool) {
        let t = Double(tokens), width = Double(shape.width)
        vector(.embedding, flops: t * width * (scaled ? 2 : 1), bytes: t * (Double(table.rowBytes) + width * 4))
    }

    /// RMSNorm of each token's row (read, squared and summed, scaled, written), split in
    /// chunks of 16 rows; the final norm before the head runs row by row on one thread.
    mutating func norm(split: Bool = true) {
        let r = Double(tokens), w = Double(shape.width)
        vector(.norm, flops: r * w * 4, bytes: r * w * 8 + w * 4, items: tokens, chunk: split ? 16 : nil)
    }

    mutating func residual() {
        let n = Double(tokens * shape.width)
        vector(.residual, flops: n, bytes: n * 12)
    }

    /// Self-attention of one layer: projections, biases and Q/K norms, RoPE and the cache
    /// write, attention over `min(context, window)` positions per sequence (keys and values
    /// in the cache's format, each read once per sequence: the kernel walks a KV head's rows
    /// once for all the query heads that share it), and the output projection.
    mutating func attention(_ a: AttentionWeights, window: Int?, accumulate: Bool) {
        let t = Double(tokens), q = Double(shape.queryWidth), kv = Double(shape.kvWidth)
        matrix(.qkvProjection, a.query)
        matrix(.qkvProjection, a.key, first: false)
        matrix(.qkvProjection, a.value, first: false)
        var adjustFlops = 0.0, adjustBytes = 0.0
        if a.queryBias != nil { adjustFlops += t * q; adjustBytes += t * q * 8 + q * 4 }
        if a.keyBias != nil { adjustFlops += t * kv; adjustBytes += t * kv * 8 + kv * 4 }
        if a.valueBias != nil { adjustFlops += t * kv; adjustBytes += t * kv * 8 + kv * 4 }
        if adjustFlops > 0 { vector(.qkAdjust, flops: adjustFlops, bytes: adjustBytes) }
        // Per-head norms of queries and keys, split in chunks of 16 head rows.
        if a.queryNorm != nil { vector(.qkAdjust, flops: t * q * 4, bytes: t * q * 8, items: tokens * shape.heads, chunk: 16) }
        if a.keyNorm != nil { vector(.qkAdjust, flops: t * kv * 4, bytes: t * kv * 8, items: tokens * shape.kvHeads, chunk: 16) }
        // A rotation is 4 flops per pair plus the angle's sine and cosine; keys and values
        // are then stored in the cache's formats. Quantized keys first rotate Q and K (log₂ n
        // butterflies and a scale per value), quantized values V and, after attention, the
        // output; each quantized kind is encoded at about 3 flops a value.
        let storedKey = Double(kvType.keys.rowBytes(shape.kvWidth)) / kv, storedValue = Double(kvType.values.rowBytes(shape.kvWidth)) / kv
        let butterflies = log2(Double(Hadamard.size(headDim: shape.headDim))) + 1
        let keyRotation = kvType.keys.isRotated ? butterflies : 0, valueRotation = kvType.values.isRotated ? butterflies : 0
        let encode = t * kv * 3 * ((kvType.keys.isRotated ? 1 : 0) + (kvType.values.isRotated ? 1 : 0))
        vector(.ropeAndCacheWrite, flops: t * (q + kv) * 3 + t * (q + kv) * keyRotation + t * kv * valueRotation + encode,
               bytes: t * (q * 8 + kv * 4 + kv * storedKey + kv * 4 + kv * storedValue), items: tokens, chunk: ForwardPass.cacheWriteChunk(kvType))
        let positions = Double(min(step.context, window ?? step.context))
        let heads = Double(shape.heads), dim = Double(shape.headDim)
        // Split by query heads (and by chunks of positions for long contexts).
        let roof = AttentionRoof(headDim: shape.headDim, heads: shape.heads, kvHeads: shape.kvHeads, kv: kvType)
        costs.append(OperationCost(.attention, unit: .attention(roof, headPositions: tokens * shape.heads * Int(positions)),
                                   flops: t * heads * positions * (4 * dim + 5) + t * q * valueRotation,
                                   bytes: t * positions * kv * (storedKey + storedValue) + t * q * 8, tokens: tokens, dispatches: 1))
        matrix(.outputProjection, a.output, accumulate: accumulate)
    }

    /// The gated feed-forward network: gate and up, the activation, down.
    mutating func feedForward(_ f: FeedForwardWeights, accumulate: Bool) {
        let n = Double(tokens * shape.feedForwardWidth)
        matrix(.feedForwardGateUp, f.gate)
        matrix(.feedForwardGateUp, f.up, first: false)
        // SiLU or GELU (an exponential or tanh, about 8 flops) and the product.
        vector(.feedForwardActivation, flops: n * 10, bytes: n * 12, items: tokens * shape.feedForwardWidth, chunk: 256)
        matrix(.feedForwardDown, f.down, accumulate: accumulate)
    }

    /// The final norm and output head over one row per sequence, and sampling (per row
    /// about a softmax over the vocabulary: read, exponentiate, normalise, 6 flops and 8
    /// bytes a logit).
    mutating func head(_ head: WeightMatrix) {
        norm(split: false)
        matrix(.outputHead, head)
        let logits = shape.vocabularySize * tokens
        costs.append(OperationCost(.sampling, unit: .sampler(logits: logits), flops: Double(logits) * 6, bytes: Double(logits) * 8, tokens: tokens, parallel: false))
    }
}
