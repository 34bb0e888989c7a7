import Foundation
import GGUF
import Kernels

/// What every architecture shares to run: the thread pool, the reusable buffers, and the
/// step that turns a ragged batch into a `BatchLayout` and a `ForwardPass` for the
/// architecture's `forward` to write its layers on.
final class ModelRuntime: @unchecked Sendable {
    /// The weights are views into the file's memory: the runtime keeps it alive.
    let file: GGUFFile
    let shape: TransformerShape
    let ropes: [RoPEConfiguration]
    let options: ModelOptions
    let pool: ThreadPool
    let profile = OperationProfile()
    private let workspace = Workspace()
    private let lock = NSLock()
    /// Per layer, how a cache of quantized keys stores them (`KeyTransform`), fitted at load
    /// by `calibrateKeys`; nil for f16 keys.
    var keyTransforms: [KeyTransform]?
    /// Gathers keys and queries while `calibrateKeys` runs.
    var keyStatistics: KeyStatistics?

    init(file: GGUFFile, shape: TransformerShape, ropes: [RoPEConfiguration], options: ModelOptions) throws {
        guard !options.kvType.values.isPerChannel else { throw ModelError.perChannelValues }
        guard options.kvType.canStore(headDim: shape.headDim) else {
            throw ModelError.unsupportedKVFormat(format: options.kvType.description, headDim: shape.headDim)
        }
        self.file = file
        self.shape = shape
        self.ropes = ropes
        self.options = options
        pool = options.pool ?? ThreadPool(threads: options.threads)
    }

    var kvShape: KVShape { KVShape(layers: shape.layers, rowWidth: shape.kvWidth, type: options.kvType, keyTransformDigest: keyTransformDigest) }

    /// Checks and lays out `batch`, runs `body` on a pass over it, and returns its logits.
    func run(_ batch: ForwardBatch, cache: PagedKVCache, _ body: (ForwardPass) -> [Float]) throws -> [Float] {
        guard !batch.tokens.isEmpty else { return [] }
        let layout = try BatchLayout(batch, shape: shape, ropes: ropes, cache: cache, kvWidth: shape.kvWidth)
        lock.lock()
        defer { lock.unlock() }
        for block in layout.blocksToClose { cache.close(block) }
        for block in layout.blocksWritten { cache.open(block) }
        let pass = ForwardPass(runtime: self, batch: batch, layout: layout, cache: cache, workspace: workspace)
        profile.countStep()
        return body(pass)
    }
}

/// One forward pass: the residual stream `x` and the layers an architecture is written
/// in (llama2.c's `forward`, one call per line of the paper's equations). Every layer
/// works on all tokens of the batch at once.
final class ForwardPass {
    let shape: TransformerShape
    let layout: BatchLayout
    let cache: PagedKVCache
    let logitRows: [Int]
    let hiddenRows: [Int]
    private let batchTokens: [Int]
    private let runtime: ModelRuntime
    private let workspace: Workspace
    private let buffers: Workspace.Buffers
    var pool: ThreadPool { runtime.pool }
    var profile: OperationProfile { runtime.profile }
    var precision: ActivationPrecision { runtime.options.precision }
    var tokens: Int { layout.tokens }

    /// The residual stream.
    var x: FloatBuffer { buffers.x }
    /// The stream normalised for the next layer's input.
    var normed: FloatBuffer { buffers.normed }
    /// A layer's output before it joins the stream (for architectures that norm it first).
    var projected: FloatBuffer { buffers.projected }

    init(runtime: ModelRuntime, batch: ForwardBatch, layout: BatchLayout, cache: PagedKVCache, workspace: Workspace) {
        self.runtime = runtime
        self.shape = runtime.shape
        self.layout = layout
        self.cache = cache
        self.workspace = workspace
        self.logitRows = batch.logitRows
        self.hiddenRows = batch.hiddenRows
        self.batchTokens = batch.tokens
        buffers = workspace.reserve(tokens: batch.tokens.count, shape: runtime.shape)
    }

    /// `x` = the tokens' embedding rows, times `scale` where the architecture scales them.
    func embed(_ table: WeightMatrix, scale: Float? = nil) {
        let width = shape.width
        profile.time(.embedding) {
            for (t, token) in batchTokens.enumerated() {
                Quantization.dequantize(table.row(token), count: width, format: table.format, into: x.pointer + t * width)
                if let scale { for i in 0..<width { x.pointer[t * width + i] *= scale } }
            }
        }
    }

    /// RMSNorm of each token's row of `source` into `out` (which may be `source`).
    func norm(_ source: FloatBuffer, _ weight: [Float], into out: FloatBuffer) {
        profile.time(.norm) { rowNorm(source.pointer, weight, rows: tokens, width: shape.width, into: out.pointer) }
    }

    private func rowNorm(_ source: UnsafeMutablePointer<Float>, _ weight: [Float], rows: Int, width: Int, into out: UnsafeMutablePointer<Float>) {
        let eps = shape.normEpsilon
        let (src, dst) = (UncheckedBox(source), UncheckedBox(out))
        weight.withUnsafeBufferPointer { w in
            let wp = UncheckedBox(w.baseAddress!)
            pool.parallelFor(rows, minimumChunk: 16) { range in
                for r in range { Norm.rms(src.value + r * width, weight: wp.value, count: width, eps: eps, into: dst.value + r * width) }
            }
        }
    }

    /// `out (+)= x · Wᵀ` for every token.
    func project(_ w: WeightMatrix, _ input: FloatBuffer, into out: FloatBuffer, accumulate: Bool) {
        MatMul.multiply(w, input.pointer, tokens: tokens, into: out.pointer, precision: precision, pool: pool,
                        scratch: &workspace.scratch, accumulating: accumulate)
    }

    /// `x += a` row by row.
    func add(_ a: FloatBuffer, into x: FloatBuffer) {
        let n = tokens * shape.width
        profile.time(.residual) { for i in 0..<n { x.pointer[i] += a.pointer[i] } }
    }

    /// Causal self-attention of `normed` for layer `layer`: Q/K/V projections (with biases
    /// and per-head Q/K norms where the weights have them), RoPE with configuration `rope`,
    /// keys and values written into the cache, attention over each sequence's cached
    /// positions (within `window` if given), and the output projection into `out`, added to
    /// what is there with `accumulate`.
    func attention(_ a: AttentionWeights, layer: Int, rope: Int, window: Int? = nil, scale: Float? = nil, into out: FloatBuffer, accumulate: Bool) {
        let hp = shape, n = tokens
        let (q, k, v, attended) = (buffers.q, buffers.k, buffers.v, buffers.attended)
        profile.time(.qkvProjection) {
            MatMul.multiply([(a.query, q.pointer), (a.key, k.pointer), (a.value, v.pointer)], normed.pointer, tokens: n,
                            precision: precision, pool: pool, scratch: &workspace.scratch)
        }
        if a.queryBias != nil || a.keyBias != nil || a.valueBias != nil || a.queryNorm != nil || a.keyNorm != nil {
            profile.time(.qkAdjust) {
                addBias(a.queryBias, to: q.pointer, width: hp.queryWidth)
                addBias(a.keyBias, to: k.pointer, width: hp.kvWidth)
                addBias(a.valueBias, to: v.pointer, width: hp.kvWidth)
                if let norm = a.queryNorm { rowNorm(q.pointer, norm, rows: n * hp.heads, width: hp.headDim, into: q.pointer) }
                if let norm = a.keyNorm { rowNorm(k.pointer, norm, rows: n * hp.kvHeads, width: hp.headDim, into: k.pointer) }
            }
        }
        let kvLayer = cache.attentionLayer(layer)
        let keys = UncheckedBox(UnsafeMutableRawPointer(mutating: kvLayer.keys)), values = UncheckedBox(UnsafeMutableRawPointer(mutating: kvLayer.values))
        let angles = layout.angles[rope], ropeLayout = runtime.ropes[rope].layout
        let type = cache.type, keyRowBytes = cache.keyRowBytes, valueRowBytes = cache.valueRowBytes, bs = cache.blockSize
        let keyTransform = UncheckedBox(type.keys != .f16 ? runtime.keyTransforms?[layer] : nil)
        profile.time(.ropeAndCacheWrite) { layout.cacheRows.withUnsafeBufferPointer { cacheRows in
            let rows = UncheckedBox(cacheRows.baseAddress!)
            pool.parallelFor(n, minimumChunk: Self.cacheWriteChunk(type)) { range in
                for t in range {
                    let angle = angles.pointer + t * hp.headDim
                    let row = rows.value[t]
                    let key = k.pointer + t * hp.kvWidth, value = v.pointer + t * hp.kvWidth
                    RoPE.apply(q.pointer + t * hp.queryWidth, heads: hp.heads, headDim: hp.headDim, angles: angle, layout: ropeLayout)
                    if type.isF16 {
                        let keyRow = keys.value.assumingMemoryBound(to: Float16.self) + row * hp.kvWidth
                        let valueRow = values.value.assumingMemoryBound(to: Float16.self) + row * hp.kvWidth
                        RoPE.applyStoringF16(key, heads: hp.kvHeads, headDim: hp.headDim, angles: angle, layout: ropeLayout, into: keyRow)
                        for i in 0..<hp.kvWidth { valueRow[i] = Float16(value[i]) }
                    } else {
                        RoPE.apply(key, heads: hp.kvHeads, headDim: hp.headDim, angles: angle, layout: ropeLayout)
                        let query = q.pointer + t * hp.queryWidth
                        if let transform = keyTransform.value {
                            transform.apply(key: key)
                            transform.apply(query: query, heads: hp.heads, headDim: hp.headDim)
                        }
                        if type.keys.isRotated {
                            Hadamard.rotate(query, heads: hp.heads, headDim: hp.headDim)
                            Hadamard.rotate(key, heads: hp.kvHeads, headDim: hp.headDim)
                        }
                        if type.values.isRotated { Hadamard.rotate(value, heads: hp.kvHeads, headDim: hp.headDim) }
                        // kivi4 keys have no rows: they are quantized from the staged ones when their block is sealed.
                        if !type.keys.isPerChannel { type.keys.encode(key, count: hp.kvWidth, into: keys.value + row * keyRowBytes) }
                        if cache.stagesKeys {
                            let staged = cache.stagedKeys(block: row / bs, layer: layer, slot: row % bs)
                            for i in 0..<hp.kvWidth { staged[i] = Float16(key[i]) }
                        }
                        type.values.encode(value, count: hp.kvWidth, into: values.value + row * valueRowBytes)
                    }
                    for mirror in layout.mirrors(of: t) {
                        (keys.value + mirror * keyRowBytes).copyMemory(from: keys.value + row * keyRowBytes, byteCount: keyRowBytes)
                        (values.value + mirror * valueRowBytes).copyMemory(from: values.value + row * valueRowBytes, byteCount: valueRowBytes)
                        if cache.stagesKeys {
                            cache.stagedKeys(block: mirror / bs, layer: layer, slot: mirror % bs)
                                .update(from: cache.stagedKeys(block: row / bs, layer: layer, slot: row % bs), count: hp.kvWidth)
                        }
                    }
                }
            }
        } }
        if let statistics = runtime.keyStatistics, type.isF16 {
            for t in 0..<n {
                let keyRow = UnsafePointer(keys.value.assumingMemoryBound(to: Float16.self) + layout.cacheRows[t] * hp.kvWidth)
                statistics.add(layer: layer, keys: keyRow, queries: q.pointer + t * hp.queryWidth)
            }
        }
        // kivi4: a block whose last position was just written is quantized before anyone reads it sealed.
        for block in layout.blocksToSeal { cache.seal(block: block, layer: layer) }
        let attentionShape = Attention.Shape(heads: hp.heads, kvHeads: hp.kvHeads, headDim: hp.headDim, window: window, scale: scale)
        profile.time(.attention) {
            layout.queries.withUnsafeBufferPointer { queries in
                Attention.causal(queries: q.pointer, batch: queries, cache: kvLayer, shape: attentionShape, into: attended.pointer, pool: pool)
            }
            if type.values.isRotated {
                pool.parallelFor(n, minimumChunk: 16) { range in
                    Hadamard.rotate(attended.pointer + range.lowerBound * hp.queryWidth, heads: range.count * hp.heads, headDim: hp.headDim)
                }
            }
        }
        profile.time(.outputProjection) { project(a.output, attended, into: out, accumulate: accumulate) }
    }

    /// Tokens per chunk of the RoPE and cache-write pass: a quantized cache's rows (rotated,
    /// then encoded) cost several times an f16 row's, so they are spread thinner.
    static func cacheWriteChunk(_ type: KVCacheType) -> Int { type.isF16 ? 16 : 2 }

    private func addBias(_ bias: [Float]?, to rows: UnsafeMutablePointer<Float>, width: Int) {
        guard let bias else { return }
        bias.withUnsafeBufferPointer { b in
            for t in 0..<tokens { for i in 0..<width { rows[t * width + i] += b[i] } }
        }
    }

    /// The gated feed-forward network of `normed` into `out` (added with `accumulate`).
    func feedForward(_ f: FeedForwardWeights, gate activation: Activation.Gate, into out: FloatBuffer, accumulate: Bool) {
        let (gate, up) = (buffers.gate, buffers.up)
        profile.time(.feedForwardGateUp) {
            MatMul.multiply([(f.gate, gate.pointer), (f.up, up.pointer)], normed.pointer, tokens: tokens,
                            precision: precision, pool: pool, scratch: &workspace.scratch)
        }
        profile.time(.feedForwardActivation) {
            pool.parallelFor(tokens * shape.feedForwardWidth, minimumChunk: 256) { r in
                activation.apply(gate: gate.pointer + r.lowerBound, up: up.pointer + r.lowerBound, count: r.count)
            }
        }
        profile.time(.feedForwardDown) {
            MatMul.multiply(f.down, gate.pointer, tokens: tokens, into: out.pointer, precision: precision, pool: pool,
                            scratch: &workspace.scratch, accumulating: accumulate)
        }
    }

    /// The final norm and the output head for the rows the batch asks logits of, then the
    /// normed rows it asks hidden states of.
    func logits(norm weight: [Float], head: WeightMatrix) -> [Float] {
        let rows = logitRows.count, width = shape.width
        var hidden = [Float](repeating: 0, count: hiddenRows.count * width)
        if !hiddenRows.isEmpty {
            profile.time(.norm) {
                weight.withUnsafeBufferPointer { w in
                    hidden.withUnsafeMutableBufferPointer { out in
                        for (i, t) in hiddenRows.enumerated() {
                            Norm.rms(x.pointer + t * width, weight: w.baseAddress!, count: width, eps: shape.normEpsilon, into: out.baseAddress! + i * width)
                        }
                    }
                }
            }
        }
        guard rows > 0 else { return hidden }
        profile.time(.norm) {
            weight.withUnsafeBufferPointer { w in
                for (i, t) in logitRows.enumerated() {
                    Norm.rms(x.pointer + t * width, weight: w.baseAddress!, count: width, eps: shape.normEpsilon, into: normed.pointer + i * width)
                }
            }
        }
        return profile.time(.outputHead) {
            // Every value written by the product, so neither zero-filled first nor copied after
            // when there are no hidden rows (decoding): 600 KB a token for Qwen2.5's vocabulary.
            let count = rows * shape.vocabularySize
            return [Float](unsafeUninitializedCapacity: count + hidden.count) { out, initialized in
                MatMul.multiply(head, normed.pointer, tokens: rows, into: out.baseAddress!, precision: precision, pool: pool, scratch: &workspace.scratch)
                if !hidden.isEmpty {
                    hidden.withUnsafeBufferPointer { h in (out.baseAddress! + count).initialize(from: h.baseAddress!, count: h.count) }
                }
                initialized = count + hidden.count
            }
        }
    }
}
