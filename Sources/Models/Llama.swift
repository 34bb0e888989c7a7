import Foundation
import GGUF
import Kernels

/// The Llama family (Llama 2/3, SmolLM, Mistral without sliding windows): pre-norm
/// decoder blocks of RMSNorm → GQA attention with RoPE → residual → RMSNorm → SwiGLU
/// feed-forward → residual, then a final RMSNorm and the output head (tied to the token
/// embedding when the file has no `output.weight`).
public final class Llama: LanguageModel, @unchecked Sendable {
    public struct Hyperparameters: Sendable, Equatable {
        public var layers: Int
        public var width: Int
        public var feedForwardWidth: Int
        public var heads: Int
        public var kvHeads: Int
        public var headDim: Int
        public var contextLength: Int
        public var vocabularySize: Int
        public var ropeBase: Float
        public var normEpsilon: Float

        public var kvWidth: Int { kvHeads * headDim }

        /// Reads `llama.*` metadata and checks that the numbers are consistent and sane.
        public init(metadata m: GGUFMetadata, prefix: String = "llama") throws {
            func positive(_ key: String, max limit: Int) throws -> Int {
                let v = try m.int("\(prefix).\(key)")
                guard v > 0, v <= limit else { throw GGUFError(field: "\(prefix).\(key)", "\(v) is outside 1...\(limit)") }
                return v
            }
            layers = try positive("block_count", max: 1024)
            width = try positive("embedding_length", max: 1 << 16)
            feedForwardWidth = try positive("feed_forward_length", max: 1 << 18)
            heads = try positive("attention.head_count", max: 1024)
            kvHeads = try m.optionalInt("\(prefix).attention.head_count_kv") == nil ? heads : try positive("attention.head_count_kv", max: 1024)
            contextLength = try positive("context_length", max: 1 << 20)
            guard width % heads == 0 else {
                throw GGUFError(field: "\(prefix).attention.head_count", "\(heads) heads do not divide \(prefix).embedding_length = \(width)")
            }
            guard heads % kvHeads == 0 else {
                throw GGUFError(field: "\(prefix).attention.head_count_kv", "\(kvHeads) KV heads do not divide \(prefix).attention.head_count = \(heads)")
            }
            headDim = width / heads
            guard headDim % 2 == 0 else {
                throw GGUFError(field: "\(prefix).attention.head_count", "\(prefix).embedding_length / head_count = \(headDim) is odd; RoPE needs pairs")
            }
            if let ropeDims = try m.optionalInt("\(prefix).rope.dimension_count"), ropeDims != headDim {
                throw GGUFError(field: "\(prefix).rope.dimension_count", "\(ropeDims) differs from the head dimension \(prefix).embedding_length / head_count = \(headDim); partial rotary embeddings are not supported")
            }
            let base = try m.optionalDouble("\(prefix).rope.freq_base") ?? 10000
            guard base.isFinite, base > 1 else { throw GGUFError(field: "\(prefix).rope.freq_base", "\(base) is not a usable RoPE base") }
            ropeBase = Float(base)
            let eps = try m.optionalDouble("\(prefix).attention.layer_norm_rms_epsilon") ?? 1e-5
            guard eps.isFinite, eps > 0, eps < 1 else {
                throw GGUFError(field: "\(prefix).attention.layer_norm_rms_epsilon", "\(eps) is not a small positive number")
            }
            normEpsilon = Float(eps)
            let tokens = try m.stringArray("tokenizer.ggml.tokens")
            vocabularySize = tokens.count
            guard vocabularySize > 0, vocabularySize <= 1 << 21 else {
                throw GGUFError(field: "tokenizer.ggml.tokens", "vocabulary of \(vocabularySize) tokens is outside 1...\(1 << 21)")
            }
            if let declared = try m.optionalInt("\(prefix).vocab_size"), declared != vocabularySize {
                throw GGUFError(field: "\(prefix).vocab_size", "\(declared) differs from the \(vocabularySize) tokens of tokenizer.ggml.tokens")
            }
        }
    }

    struct Layer {
        let attentionNorm: [Float]
        let query, key, value, output: WeightMatrix
        let feedForwardNorm: [Float]
        let gate, up, down: WeightMatrix
    }

    public let architecture = "llama"
    public let hyperparameters: Hyperparameters
    public let options: ModelOptions
    let file: GGUFFile
    let embedding: WeightMatrix
    let layers: [Layer]
    let outputNorm: [Float]
    let outputHead: WeightMatrix
    let pool: ThreadPool
    /// Activation buffers reused by every forward pass (grown, never shrunk), so the
    /// per-token loop allocates nothing but the returned logits.
    private let workspace = Workspace()
    private let workspaceLock = NSLock()
    let ropeLayout: RoPE.Layout = .normal

    public var vocabularySize: Int { hyperparameters.vocabularySize }
    public var trainedContextLength: Int { hyperparameters.contextLength }

    public init(file: GGUFFile, options: ModelOptions) throws {
        let hp = try Hyperparameters(metadata: file.metadata)
        let bind = TensorBinder(file: file)
        // Every block the tensors mention must be within block_count, and every block
        // within it must be complete.
        for tensor in file.tensors where tensor.name.hasPrefix("blk.") {
            let index = tensor.name.dropFirst(4).prefix { $0.isNumber }
            guard let i = Int(index), i < hp.layers else {
                throw GGUFError(field: "llama.block_count", "\(hp.layers) blocks, but the file has tensor \(tensor.name)")
            }
        }
        for i in 0..<hp.layers where !bind.has("blk.\(i).attn_norm.weight") {
            throw GGUFError(field: "llama.block_count", "\(hp.layers) blocks, but the file has no blk.\(i)")
        }
        let width = "llama.embedding_length", vocab = "tokenizer.ggml.tokens", ffn = "llama.feed_forward_length"
        let heads = "llama.attention.head_count", kvHeads = "llama.attention.head_count_kv"
        embedding = try bind.matrix("token_embd.weight", rows: hp.vocabularySize, cols: hp.width, keys: (vocab, width))
        layers = try (0..<hp.layers).map { i in
            let p = "blk.\(i)."
            return Layer(
                attentionNorm: try bind.vector(p + "attn_norm.weight", count: hp.width, key: width),
                query: try bind.matrix(p + "attn_q.weight", rows: hp.width, cols: hp.width, keys: (heads, width)),
                key: try bind.matrix(p + "attn_k.weight", rows: hp.kvWidth, cols: hp.width, keys: (kvHeads, width)),
                value: try bind.matrix(p + "attn_v.weight", rows: hp.kvWidth, cols: hp.width, keys: (kvHeads, width)),
                output: try bind.matrix(p + "attn_output.weight", rows: hp.width, cols: hp.width, keys: (width, heads)),
                feedForwardNorm: try bind.vector(p + "ffn_norm.weight", count: hp.width, key: width),
                gate: try bind.matrix(p + "ffn_gate.weight", rows: hp.feedForwardWidth, cols: hp.width, keys: (ffn, width)),
                up: try bind.matrix(p + "ffn_up.weight", rows: hp.feedForwardWidth, cols: hp.width, keys: (ffn, width)),
                down: try bind.matrix(p + "ffn_down.weight", rows: hp.width, cols: hp.feedForwardWidth, keys: (width, ffn)))
        }
        outputNorm = try bind.vector("output_norm.weight", count: hp.width, key: width)
        outputHead = bind.has("output.weight")
            ? try bind.matrix("output.weight", rows: hp.vocabularySize, cols: hp.width, keys: (vocab, width))
            : embedding
        self.hyperparameters = hp
        self.options = options
        self.file = file
        self.pool = ThreadPool(threads: options.threads)
    }

    /// RMSNorm of each of `tokens` rows of `x`, split over the pool by rows.
    private func normalize(_ x: FloatBuffer, _ weight: [Float], into out: FloatBuffer, tokens: Int) {
        let width = hyperparameters.width, eps = hyperparameters.normEpsilon
        weight.withUnsafeBufferPointer { w in
            let wp = UncheckedBox(w.baseAddress!)
            pool.parallelFor(tokens, minimumChunk: 16) { rows in
                for t in rows { Norm.rms(x.pointer + t * width, weight: wp.value, count: width, eps: eps, into: out.pointer + t * width) }
            }
        }
    }

    public var kvShape: (layers: Int, rowWidth: Int) { (hyperparameters.layers, hyperparameters.kvWidth) }

    /// Checks a batch against the model and the cache before any of it runs.
    private func validate(_ batch: ForwardBatch, cache: PagedKVCache) throws {
        let hp = hyperparameters
        guard cache.layers == hp.layers, cache.rowWidth == hp.kvWidth else {
            throw ModelError.invalidBatch("the cache has \(cache.layers) layers of \(cache.rowWidth) halves, the model \(hp.layers) of \(hp.kvWidth)")
        }
        for t in batch.tokens where t < 0 || t >= hp.vocabularySize {
            throw ModelError.tokenOutOfRange(token: t, vocabularySize: hp.vocabularySize)
        }
        var total = 0
        for (i, s) in batch.sequences.enumerated() {
            total += s.count
            guard s.count > 0, s.firstPosition >= 0 else { throw ModelError.invalidBatch("sequence \(i) has \(s.count) tokens at position \(s.firstPosition)") }
            let needed = (s.firstPosition + s.count + cache.blockSize - 1) / cache.blockSize
            guard s.blockTable.count >= needed else {
                throw ModelError.invalidBatch("sequence \(i) reaches position \(s.firstPosition + s.count - 1) but its block table covers \(s.blockTable.count * cache.blockSize)")
            }
            for b in s.blockTable.prefix(needed) where b < 0 || Int(b) >= cache.blockCount {
                throw ModelError.invalidBatch("sequence \(i) names block \(b) of a cache of \(cache.blockCount)")
            }
        }
        guard total == batch.tokens.count else { throw ModelError.invalidBatch("the sequences hold \(total) tokens, the batch \(batch.tokens.count)") }
        for r in batch.logitRows where r < 0 || r >= total { throw ModelError.invalidBatch("logit row \(r) is outside the batch of \(total)") }
    }

    public func forward(_ batch: ForwardBatch, cache: PagedKVCache) throws -> [Float] {
        let hp = hyperparameters
        let n = batch.tokens.count
        guard n > 0 else { return [] }
        try validate(batch, cache: cache)

        workspaceLock.lock()
        defer { workspaceLock.unlock() }
        let ws = workspace.reserve(tokens: n, hyperparameters: hp)
        let (x, normed, q, k, v) = (ws.x, ws.normed, ws.q, ws.k, ws.v)
        let (attended, gate, up) = (ws.attended, ws.gate, ws.up)
        let precision = options.precision
        let shape = Attention.Shape(heads: hp.heads, kvHeads: hp.kvHeads, headDim: hp.headDim)
        let bs = cache.blockSize

        for (t, token) in batch.tokens.enumerated() {
            Quantization.dequantize(embedding.row(token), count: hp.width, format: embedding.format, into: x.pointer + t * hp.width)
        }

        // Every token's cache row and RoPE angles; the block tables side by side in one
        // buffer that outlives the layer loop, so the attention queries can point into it.
        let angles = ws.angles
        var cacheRows = [Int](repeating: 0, count: n)
        var tableOffsets: [Int] = []
        var tables: [Int32] = []
        var first = 0
        for s in batch.sequences {
            tableOffsets.append(tables.count)
            tables.append(contentsOf: s.blockTable)
            for j in 0..<s.count {
                let p = s.firstPosition + j, t = first + j
                cacheRows[t] = Int(s.blockTable[p / bs]) * bs + p % bs
                RoPE.angles(position: p, headDim: hp.headDim, base: hp.ropeBase, into: angles.pointer + t * hp.headDim)
            }
            first += s.count
        }

        tables.withUnsafeBufferPointer { tableBuffer in
            // Queries of each sequence visited short-long-short-long (causal rows grow with
            // position), so that any contiguous share of the work is a fair one.
            var queries: [Attention.Query] = []
            queries.reserveCapacity(n)
            var first = 0
            for (i, s) in batch.sequences.enumerated() {
                let table = tableBuffer.baseAddress! + tableOffsets[i]
                for j in 0..<s.count {
                    let t = j % 2 == 0 ? j / 2 : s.count - 1 - j / 2
                    queries.append(Attention.Query(row: first + t, position: s.firstPosition + t, blockTable: table))
                }
                first += s.count
            }
            queries.withUnsafeBufferPointer { queries in
                cacheRows.withUnsafeBufferPointer { cacheRows in
                    let rows = UncheckedBox(cacheRows.baseAddress!)
                    for (l, layer) in layers.enumerated() {
                        normalize(x, layer.attentionNorm, into: normed, tokens: n)
                        let keys = cache.keys[l], values = cache.values[l]
                        MatMul.multiply([(layer.query, q.pointer), (layer.key, k.pointer), (layer.value, v.pointer)], normed.pointer, tokens: n,
                                        precision: precision, pool: pool, scratch: &workspace.scratch)
                        pool.parallelFor(n, minimumChunk: 16) { tokens in
                            for t in tokens {
                                let a = angles.pointer + t * hp.headDim
                                let row = rows.value[t] * hp.kvWidth
                                RoPE.apply(q.pointer + t * hp.width, heads: hp.heads, headDim: hp.headDim, angles: a, layout: ropeLayout)
                                RoPE.applyStoringF16(k.pointer + t * hp.kvWidth, heads: hp.kvHeads, headDim: hp.headDim, angles: a,
                                                     layout: ropeLayout, into: keys + row)
                                for i in 0..<hp.kvWidth { values[row + i] = Float16(v.pointer[t * hp.kvWidth + i]) }
                            }
                        }
                        Attention.causal(queries: q.pointer, batch: queries, cache: .init(keys: keys, values: values, blockSize: bs),
                                         shape: shape, into: attended.pointer, pool: pool)
                        MatMul.multiply(layer.output, attended.pointer, tokens: n, into: x.pointer, precision: precision, pool: pool,
                                        scratch: &workspace.scratch, accumulating: true)

                        normalize(x, layer.feedForwardNorm, into: normed, tokens: n)
                        MatMul.multiply([(layer.gate, gate.pointer), (layer.up, up.pointer)], normed.pointer, tokens: n,
                                        precision: precision, pool: pool, scratch: &workspace.scratch)
                        let ffn = hp.feedForwardWidth
                        pool.parallelFor(n * ffn, minimumChunk: 256) { r in
                            Activation.swiglu(gate: gate.pointer + r.lowerBound, up: up.pointer + r.lowerBound, count: r.count)
                        }
                        MatMul.multiply(layer.down, gate.pointer, tokens: n, into: x.pointer, precision: precision, pool: pool,
                                        scratch: &workspace.scratch, accumulating: true)
                    }
                }
            }
        }

        let rows = batch.logitRows.count
        guard rows > 0 else { return [] }
        outputNorm.withUnsafeBufferPointer { w in
            for (i, t) in batch.logitRows.enumerated() {
                Norm.rms(x.pointer + t * hp.width, weight: w.baseAddress!, count: hp.width, eps: hp.normEpsilon, into: normed.pointer + i * hp.width)
            }
        }
        var logits = [Float](repeating: 0, count: rows * hp.vocabularySize)
        logits.withUnsafeMutableBufferPointer { out in
            MatMul.multiply(outputHead, normed.pointer, tokens: rows, into: out.baseAddress!, precision: precision, pool: pool, scratch: &workspace.scratch)
        }
        return logits
    }
}
