import GGUF
import Kernels

/// The Llama family (Llama 2/3, SmolLM, Mistral without sliding windows) and the
/// architectures that differ from it only in details (`Variant`: Qwen2's biases, Qwen3's
/// Q/K norms, their NeoX RoPE): pre-norm decoder blocks of RMSNorm → GQA attention with
/// RoPE → residual → RMSNorm → SwiGLU feed-forward → residual, then a final RMSNorm and the
/// output head (tied to the token embedding when the file has no `output.weight`).
public final class Llama: LanguageModel, @unchecked Sendable {
    /// What distinguishes one member of the family.
    struct Variant {
        /// `general.architecture`, also the prefix of its metadata keys.
        let name: String
        let ropeLayout: RoPE.Layout
        /// Q/K/V biases are part of the architecture (they are bound wherever a file has them).
        let requiresBiases: Bool
        /// Per-head RMSNorm of queries and keys before RoPE.
        let requiresQKNorms: Bool

        static let llama = Variant(name: "llama", ropeLayout: .normal, requiresBiases: false, requiresQKNorms: false)
    }

    struct Block {
        let attentionNorm: [Float]
        let attention: AttentionWeights
        let feedForwardNorm: [Float]
        let feedForward: FeedForwardWeights
    }

    public let architecture: String
    public let shape: TransformerShape
    let runtime: ModelRuntime
    let embedding, outputHead: WeightMatrix
    let blocks: [Block]
    let outputNorm: [Float]

    public var vocabularySize: Int { shape.vocabularySize }
    public var trainedContextLength: Int { shape.contextLength }
    public var hiddenWidth: Int { shape.width }
    public var kvShape: KVShape { runtime.kvShape }

    init(file: GGUFFile, options: ModelOptions, variant: Variant) throws {
        let prefix = variant.name
        let shape = try TransformerShape(metadata: file.metadata, prefix: prefix)
        let bind = TensorBinder(file: file)
        try bind.checkBlocks(shape, prefix: prefix)
        (embedding, outputHead) = try bind.embeddingAndHead(shape: shape, prefix: prefix)
        blocks = try (0..<shape.layers).map { i in
            Block(attentionNorm: try bind.norm("blk.\(i).attn_norm.weight", shape: shape, prefix: prefix),
                  attention: try bind.attention(block: i, shape: shape, prefix: prefix, requireBiases: variant.requiresBiases,
                                                requireNorms: variant.requiresQKNorms),
                  feedForwardNorm: try bind.norm("blk.\(i).ffn_norm.weight", shape: shape, prefix: prefix),
                  feedForward: try bind.feedForward(block: i, shape: shape, prefix: prefix))
        }
        outputNorm = try bind.norm("output_norm.weight", shape: shape, prefix: prefix)
        // Llama 3.1+ divides each RoPE frequency by a factor (`rope_freqs`, one per pair).
        let factors = bind.has("rope_freqs.weight")
            ? try bind.vector("rope_freqs.weight", count: shape.headDim / 2, key: "\(prefix).rope.dimension_count") : nil
        architecture = variant.name
        self.shape = shape
        runtime = try ModelRuntime(file: file, shape: shape, ropes: [RoPEConfiguration(base: shape.ropeBase, factors: factors, layout: variant.ropeLayout)],
                               options: options)
    }

    public var profile: OperationProfile { runtime.profile }

    public func stepCosts(_ step: StepShape) -> [OperationCost] {
        var cost = StepCostBuilder(shape: shape, step: step, kvType: kvShape.type)
        cost.embedding(embedding, scaled: false)
        for block in blocks {
            cost.norm()
            cost.attention(block.attention, window: nil, accumulate: true)
            cost.norm()
            cost.feedForward(block.feedForward, accumulate: true)
        }
        cost.head(outputHead)
        return cost.costs
    }

    public func forward(_ batch: ForwardBatch, cache: PagedKVCache) throws -> [Float] {
        try runtime.run(batch, cache: cache) { pass in
            pass.embed(embedding)
            for (l, block) in blocks.enumerated() {
                pass.norm(pass.x, block.attentionNorm, into: pass.normed)
                pass.attention(block.attention, layer: l, rope: 0, into: pass.x, accumulate: true)
                pass.norm(pass.x, block.feedForwardNorm, into: pass.normed)
                pass.feedForward(block.feedForward, gate: .swiglu, into: pass.x, accumulate: true)
            }
            return pass.logits(norm: outputNorm, head: outputHead)
        }
    }
}

extension Llama: RuntimeModel {}
