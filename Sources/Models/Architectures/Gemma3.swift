import Foundation
import GGUF
import Kernels

/// Gemma 3 (text): embeddings scaled by √width; each block RMSNorm → attention (per-head
/// Q/K RMSNorm, NeoX RoPE) → RMSNorm → residual, RMSNorm → GELU-gated feed-forward →
/// RMSNorm → residual. Five of every six layers attend within a sliding window with their
/// own RoPE base (10,000); every sixth is global (`rope.freq_base`). Follows llama.cpp's
/// `llm_build_gemma3`. The GGUF converter stores Gemma's norm weights as `1 + w` already,
/// so every norm here is a plain RMSNorm.
public final class Gemma3: LanguageModel, @unchecked Sendable {
    struct Block {
        let attentionNorm, postAttentionNorm: [Float]
        let attention: AttentionWeights
        let feedForwardNorm, postFeedForwardNorm: [Float]
        let feedForward: FeedForwardWeights
        /// Local layers attend within the window, with the local RoPE.
        let isLocal: Bool
    }

    public let architecture = "gemma3"
    public let shape: TransformerShape
    let runtime: ModelRuntime
    let embedding, outputHead: WeightMatrix
    let blocks: [Block]
    let outputNorm: [Float]
    let window: Int?
    let attentionScale: Float
    let logitSoftCap: Float?

    public var vocabularySize: Int { shape.vocabularySize }
    public var trainedContextLength: Int { shape.contextLength }
    public var hiddenWidth: Int { shape.width }
    public var kvShape: KVShape { runtime.kvShape }

    init(file: GGUFFile, options: ModelOptions) throws {
        let prefix = "gemma3", m = file.metadata
        let shape = try TransformerShape(metadata: m, prefix: prefix)
        let bind = TensorBinder(file: file)
        try bind.checkBlocks(shape, prefix: prefix)
        let window = try m.optionalInt("\(prefix).attention.sliding_window").flatMap { $0 > 0 ? $0 : nil }
        let pattern = try m.optionalInt("\(prefix).attention.sliding_window_pattern") ?? 6
        guard pattern >= 0 else { throw GGUFError(field: "\(prefix).attention.sliding_window_pattern", "\(pattern) is negative") }
        let localBase = try m.optionalDouble("\(prefix).rope.freq_base_swa") ?? 10000
        guard localBase.isFinite, localBase > 1 else { throw GGUFError(field: "\(prefix).rope.freq_base_swa", "\(localBase) is not a usable RoPE base") }
        (embedding, outputHead) = try bind.embeddingAndHead(shape: shape, prefix: prefix)
        blocks = try (0..<shape.layers).map { i in
            let p = "blk.\(i)."
            return Block(attentionNorm: try bind.norm(p + "attn_norm.weight", shape: shape, prefix: prefix),
                         postAttentionNorm: try bind.norm(p + "post_attention_norm.weight", shape: shape, prefix: prefix),
                         attention: try bind.attention(block: i, shape: shape, prefix: prefix, requireNorms: true),
                         feedForwardNorm: try bind.norm(p + "ffn_norm.weight", shape: shape, prefix: prefix),
                         postFeedForwardNorm: try bind.norm(p + "post_ffw_norm.weight", shape: shape, prefix: prefix),
                         feedForward: try bind.feedForward(block: i, shape: shape, prefix: prefix),
                         // llama.cpp's set_swa_pattern: layer i is local unless i % pattern == pattern - 1.
                         isLocal: window != nil && (pattern == 0 || i % pattern < pattern - 1))
        }
        outputNorm = try bind.norm("output_norm.weight", shape: shape, prefix: prefix)
        // gemma_pytorch scales queries by 1/√head size, except the 27B model (62 layers), by
        // 1/√(width / heads); llama.cpp does the same.
        attentionScale = 1 / (shape.layers == 62 ? Float(shape.width / shape.heads) : Float(shape.headDim)).squareRoot()
        let cap = try m.optionalDouble("\(prefix).final_logit_softcapping") ?? 0
        logitSoftCap = cap > 0 ? Float(cap) : nil
        self.window = window
        self.shape = shape
        runtime = try ModelRuntime(file: file, shape: shape, ropes: [RoPEConfiguration(base: shape.ropeBase, layout: .neox),
                                                     RoPEConfiguration(base: Float(localBase), layout: .neox)], options: options)
    }

    public var profile: OperationProfile { runtime.profile }

    public func stepCosts(_ step: StepShape) -> [OperationCost] {
        var cost = StepCostBuilder(shape: shape, step: step, kvType: kvShape.type)
        cost.embedding(embedding, scaled: true)
        for block in blocks {
            cost.norm()
            cost.attention(block.attention, window: block.isLocal ? window : nil, accumulate: false)
            cost.norm()
            cost.residual()
            cost.norm()
            cost.feedForward(block.feedForward, accumulate: false)
            cost.norm()
            cost.residual()
        }
        cost.head(outputHead)
        return cost.costs
    }

    public func forward(_ batch: ForwardBatch, cache: PagedKVCache) throws -> [Float] {
        try runtime.run(batch, cache: cache) { pass in
            pass.embed(embedding, scale: Float(shape.width).squareRoot())
            for (l, block) in blocks.enumerated() {
                pass.norm(pass.x, block.attentionNorm, into: pass.normed)
                pass.attention(block.attention, layer: l, rope: block.isLocal ? 1 : 0, window: block.isLocal ? window : nil,
                               scale: attentionScale, into: pass.projected, accumulate: false)
                pass.norm(pass.projected, block.postAttentionNorm, into: pass.projected)
                pass.add(pass.projected, into: pass.x)
                pass.norm(pass.x, block.feedForwardNorm, into: pass.normed)
                pass.feedForward(block.feedForward, gate: .geglu, into: pass.projected, accumulate: false)
                pass.norm(pass.projected, block.postFeedForwardNorm, into: pass.projected)
                pass.add(pass.projected, into: pass.x)
            }
            var logits = pass.logits(norm: outputNorm, head: outputHead)
            if let cap = logitSoftCap { for i in 0..<(pass.logitRows.count * shape.vocabularySize) { logits[i] = tanhf(logits[i] / cap) * cap } }
            return logits
        }
    }
}

extension Gemma3: RuntimeModel {}
