import GGUF
import Kernels

/// A target of `apus quantize`: llama-quantize's file types, each a default tensor format and
/// the rules that give some tensors more bits (the "mix"). The rules follow llama.cpp's
/// `llama_tensor_get_type` for these types without an importance matrix, so a file quantized
/// by either tool has the same tensor types. F16, BF16 and F32 have no mix: every matrix is
/// stored in that format (a quantized input is decoded, as with llama-quantize's F16).
public enum QuantizationMix: String, CaseIterable, Sendable {
    case q8_0 = "Q8_0", q4_0 = "Q4_0", q4_1 = "Q4_1", q5_0 = "Q5_0", q5_1 = "Q5_1"
    case q4_K_M = "Q4_K_M", q5_K_M = "Q5_K_M", q6_K = "Q6_K"
    case f16 = "F16", bf16 = "BF16", f32 = "F32"

    /// The name as given on the command line, in any case (`q4_k_m`).
    public init?(name: String) {
        guard let mix = Self.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) else { return nil }
        self = mix
    }

    /// llama.cpp's `enum llama_ftype`, written to `general.file_type`.
    public var fileType: UInt32 {
        switch self {
        case .q4_0: 2
        case .q4_1: 3
        case .q8_0: 7
        case .q5_0: 8
        case .q5_1: 9
        case .q4_K_M: 15
        case .q5_K_M: 17
        case .q6_K: 18
        case .f32: 0
        case .f16: 1
        case .bf16: 32
        }
    }

    /// The format of every quantizable tensor that no rule names otherwise.
    public var defaultFormat: TensorFormat {
        switch self {
        case .q8_0: .q8_0
        case .q4_0: .q4_0
        case .q4_1: .q4_1
        case .q5_0: .q5_0
        case .q5_1: .q5_1
        case .q4_K_M: .q4_K
        case .q5_K_M: .q5_K
        case .q6_K: .q6_K
        case .f16: .f16
        case .bf16: .bf16
        case .f32: .f32
        }
    }
}

/// The format each tensor of a file gets under a mix, decided once for the whole file (the
/// rules count attention-V and feed-forward-down tensors across layers).
public struct QuantizationPlan: Sendable {
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let source: GGMLType
        public let target: GGMLType
        /// Why the target is not the rule's format: a row width that is not a whole number
        /// of its blocks (llama-quantize's fallback), nil otherwise.
        public let fallback: String?
    }

    public let mix: QuantizationMix
    public let entries: [Entry]

    /// The tensors as (name, type, dimensions), and the file's metadata (for the architecture,
    /// layer and expert counts). The entries are in llama.cpp's order, which is also the order
    /// its "more bits" rules count layers in: tensors outside `blk.N.` first, then by layer
    /// number, by name within each.
    public init(mix: QuantizationMix, tensors: [(name: String, type: GGMLType, dimensions: [Int])], metadata: GGUFMetadata) {
        self.mix = mix
        var rules = MixRules(mix: mix, tensors: tensors, metadata: metadata)
        entries = tensors.sorted { Self.llamaOrder($0.name, $1.name) }.map { rules.entry(for: $0) }
    }

    static func llamaOrder(_ a: String, _ b: String) -> Bool {
        func layer(_ name: String) -> Int {
            guard name.hasPrefix("blk.") else { return -1 }
            return Int(name.dropFirst(4).prefix { $0.isNumber }) ?? -1
        }
        let (la, lb) = (layer(a), layer(b))
        return la != lb ? la < lb : a < b
    }
}

/// llama.cpp's selection rules, restricted to the mixes `QuantizationMix` offers.
private struct MixRules {
    enum Category { case output, tokenEmbedding, attentionVLike, attentionK, attentionOutput, ffnDown, other }

    let mix: QuantizationMix
    let architecture: String
    let layerCount: Int
    let expertCount: Int
    let tiedEmbeddings: Bool
    /// llama.cpp's 70B Llama (80 layers, grouped-query attention), whose shared V projection gets more bits.
    let isLlama70B: Bool
    let attentionVCount: Int
    var attentionVSeen = 0
    var ffnDownSeen = 0

    init(mix: QuantizationMix, tensors: [(name: String, type: GGMLType, dimensions: [Int])], metadata: GGUFMetadata) {
        self.mix = mix
        architecture = (try? metadata.string("general.architecture")) ?? ""
        let ffnDownCount = tensors.filter { Self.category(of: $0.name) == .ffnDown }.count
        layerCount = ((try? metadata.optionalInt("\(architecture).block_count")) ?? nil) ?? ffnDownCount
        expertCount = max(1, ((try? metadata.optionalInt("\(architecture).expert_count")) ?? nil) ?? 1)
        tiedEmbeddings = !tensors.contains { Self.category(of: $0.name) == .output }
        let heads = (try? metadata.optionalInt("\(architecture).attention.head_count")) ?? nil
        let kvHeads = (try? metadata.optionalInt("\(architecture).attention.head_count_kv")) ?? nil
        isLlama70B = architecture == "llama" && layerCount == 80 && heads != nil && kvHeads != nil && heads != kvHeads
        attentionVCount = tensors.filter { Self.category(of: $0.name) == .attentionVLike }.count
    }

    static func category(of name: String) -> Category {
        if name == "output.weight" { return .output }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" { return .tokenEmbedding }
        if name.contains("attn_qkv.weight") || name.contains("attn_kv_b.weight") || name.contains("attn_v.weight") { return .attentionVLike }
        if name.contains("attn_k.weight") { return .attentionK }
        if name.contains("attn_output.weight") { return .attentionOutput }
        if name.contains("ffn_down") { return .ffnDown }
        return .other
    }

    /// llama.cpp quantizes only matrices named `*weight` that are not norms, routing tables,
    /// position or token-type embeddings, or a few small special tensors.
    static func allowsQuantization(_ name: String, dimensions: [Int]) -> Bool {
        // ggml's `n_dims`: the count up to the last dimension larger than 1.
        let dimensionCount = (dimensions.lastIndex { $0 > 1 } ?? 0) + 1
        guard dimensionCount >= 2, name.hasSuffix("weight") else { return false }
        let excluded = ["_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj", "ssm_conv1d",
                        "shortconv.conv.weight", "attn_rel_b.weight", "time_mix_", ".position_embd", ".rel_pos", ".patch_embd"]
        if excluded.contains(where: name.contains) { return false }
        return name != "position_embd.weight" && name != "token_types.weight"
    }

    /// ggml's layer choice for "more bits": the first and last eighth, and every third between.
    static func usesMoreBits(_ layer: Int, of layers: Int) -> Bool {
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
    }

    mutating func entry(for tensor: (name: String, type: GGMLType, dimensions: [Int])) -> QuantizationPlan.Entry {
        guard Self.allowsQuantization(tensor.name, dimensions: tensor.dimensions) else {
            return .init(name: tensor.name, source: tensor.type, target: tensor.type, fallback: nil)
        }
        guard mix.defaultFormat.isQuantized else {
            return .init(name: tensor.name, source: tensor.type, target: GGMLType(rawValue: mix.defaultFormat.ggmlType)!, fallback: nil)
        }
        let chosen = ruleFormat(tensor.name, rowLength: tensor.dimensions[0])
        let (target, fallback) = Self.fitting(chosen, rowLength: tensor.dimensions[0])
        return .init(name: tensor.name, source: tensor.type, target: target, fallback: fallback)
    }

    private mutating func ruleFormat(_ name: String, rowLength: Int) -> GGMLType {
        var format = GGMLType(rawValue: mix.defaultFormat.ggmlType)!
        let kQuant = mix == .q4_K_M || mix == .q5_K_M
        switch Self.category(of: name) {
        case .output:
            return outputFormat(default: format, rowLength: rowLength)
        case .tokenEmbedding:
            return tiedEmbeddings ? outputFormat(default: format, rowLength: rowLength) : format
        case .attentionVLike:
            if kQuant && Self.usesMoreBits(attentionVSeen, of: attentionVCount) { format = .q6_K }
            if isLlama70B && (format == .q3_K || format == .q4_K) { format = .q5_K }
            if expertCount == 8 { format = .q8_0 }
            attentionVSeen += 1
        case .attentionK:
            if expertCount == 8 { format = .q8_0 }
        case .ffnDown:
            let layer = expertCount > 1 ? Self.layerIndex(name) ?? ffnDownSeen : ffnDownSeen
            if mix == .q4_K_M {
                if architecture == "falcon" {
                    format = layer < layerCount / 16 ? .q6_K : Self.usesMoreBits(layer, of: layerCount) ? .q5_K : .q4_K
                } else if Self.usesMoreBits(layer, of: layerCount) {
                    format = .q6_K
                }
            } else if mix == .q5_K_M && Self.usesMoreBits(layer, of: layerCount) {
                format = .q6_K
            }
            ffnDownSeen += 1
        case .attentionOutput:
            if architecture != "falcon" && expertCount == 8 && mix == .q4_K_M { format = .q5_K }
        case .other:
            break
        }
        return format
    }

    /// The output projection (and a tied token embedding) gets Q6_K unless the mix is Q8_0, or
    /// Q8_0 where the width does not fit the mix's blocks (and always for Falcon).
    private func outputFormat(default format: GGMLType, rowLength: Int) -> GGMLType {
        if architecture == "falcon" || rowLength % format.blockSize != 0 { return .q8_0 }
        return format == .q8_0 ? .q8_0 : .q6_K
    }

    private static func layerIndex(_ name: String) -> Int? {
        guard name.hasPrefix("blk.") else { return nil }
        return Int(name.dropFirst(4).prefix { $0.isNumber })
    }

    /// A format whose block does not divide the row width falls back to a 32-value format of
    /// similar size, and to F16 where even that does not fit.
    static func fitting(_ format: GGMLType, rowLength: Int) -> (GGMLType, String?) {
        guard rowLength % format.blockSize != 0 else { return (format, nil) }
        var fallback: GGMLType
        switch format {
        case .q2_K, .q3_K: fallback = .q4_0
        case .q4_K: fallback = .q5_0
        case .q5_K: fallback = .q5_1
        case .q6_K: fallback = .q8_0
        case .iq4_XS: fallback = .iq4_NL
        default: fallback = format
        }
        if rowLength % fallback.blockSize != 0 { fallback = .f16 }
        return (fallback, "row width \(rowLength) is not a multiple of \(format.name)'s \(format.blockSize)")
    }
}
