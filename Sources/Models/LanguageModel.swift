import GGUF
import Kernels
import Tokenizer

/// A decoder-only language model: token ids in, next-token logits out.
public protocol LanguageModel: AnyObject, Sendable {
    var architecture: String { get }
    var vocabularySize: Int { get }
    /// The context length the model was trained for (from its metadata).
    var trainedContextLength: Int { get }

    /// Layers, values per position per layer, and format of this model's KV cache.
    var kvShape: KVShape { get }

    /// Width of the hidden state (the residual stream).
    var hiddenWidth: Int { get }

    /// Runs every sequence's tokens of `batch` at its positions, writes their keys and
    /// values into `cache` through the sequences' block tables, and returns the logits of
    /// `batch.logitRows`, one row of `vocabularySize` values each, then the final hidden
    /// states of `batch.hiddenRows`, `hiddenWidth` values each. A row's values are bitwise
    /// the same whatever else shares the batch and however its sequence was split into
    /// earlier batches.
    func forward(_ batch: ForwardBatch, cache: PagedKVCache) throws -> [Float]

    /// What one decode step costs, operation by operation (`Roofline` turns it into time).
    func stepCosts(_ step: StepShape) -> [OperationCost]

    /// Time per operation class of the forward passes run while it is enabled.
    var profile: OperationProfile { get }
}

/// What a model's KV cache holds: `layers` layers of `rowWidth` values per position (KV
/// heads × head size), keys and again values, stored as `type` says, quantized keys
/// transformed as the model fitted them at load (`keyTransformDigest`, 0 for none).
public struct KVShape: Sendable, Equatable {
    public var layers: Int
    public var rowWidth: Int
    public var type: KVCacheType
    public var keyTransformDigest: UInt64

    public init(layers: Int, rowWidth: Int, type: KVCacheType, keyTransformDigest: UInt64 = 0) {
        self.layers = layers
        self.rowWidth = rowWidth
        self.type = type
        self.keyTransformDigest = keyTransformDigest
    }
}

extension LanguageModel {
    /// A paged cache of `blockCount` blocks of `blockSize` positions (`stagesQ4_0Keys` as
    /// `PagedKVCache` takes it).
    public func makePagedCache(blockSize: Int, blockCount: Int, stagesQ4_0Keys: Bool = true) -> PagedKVCache {
        PagedKVCache(layers: kvShape.layers, blockSize: blockSize, blockCount: blockCount, rowWidth: kvShape.rowWidth, type: kvShape.type,
                     stagesQ4_0Keys: stagesQ4_0Keys)
    }

    /// Bytes of KV cache one position takes.
    public var kvBytesPerPosition: Int {
        PagedKVCache.bytesPerBlock(layers: kvShape.layers, blockSize: 1, rowWidth: kvShape.rowWidth, type: kvShape.type)
    }

    /// A single-sequence KV cache for up to `capacity` positions.
    public func makeCache(capacity: Int) -> KVCache {
        KVCache(layers: kvShape.layers, capacity: capacity, rowWidth: kvShape.rowWidth, type: kvShape.type)
    }

    /// Runs `tokens` at positions `cache.length ..< cache.length + tokens.count`, appends
    /// their keys and values to `cache`, and returns the logits of the tokens at
    /// `logitRows` (indices into `tokens`), one row of `vocabularySize` values each.
    public func forward(_ tokens: [Int], cache: KVCache, logitRows: Range<Int>) throws -> [Float] {
        precondition(logitRows.lowerBound >= 0 && logitRows.upperBound <= tokens.count, "logit rows outside the batch")
        guard !tokens.isEmpty else { return [] }
        let start = cache.length
        guard start + tokens.count <= cache.capacity else { throw ModelError.contextFull(needed: start + tokens.count, capacity: cache.capacity) }
        var batch = ForwardBatch()
        batch.append(tokens, firstPosition: start, blockTable: cache.blockTable, logitsOfLast: 0)
        batch.logitRows = Array(logitRows)
        let logits = try forward(batch, cache: cache.storage)
        cache.length = start + tokens.count
        return logits
    }
}

/// Options that change how a model computes, not what it is.
public struct ModelOptions: Sendable {
    public var threads: Int
    public var precision: ActivationPrecision
    /// The worker threads to run on, shared with other models; nil: a pool of `threads` of its own.
    public var pool: ThreadPool?
    /// How the caches this model makes store keys and values.
    public var kvType: KVCacheType

    public init(threads: Int = ModelOptions.defaultThreads, precision: ActivationPrecision = .int8, pool: ThreadPool? = nil,
                kvType: KVCacheType = .f16) {
        self.threads = threads
        self.precision = precision
        self.pool = pool
        self.kvType = kvType
    }

    public static var defaultThreads: Int { max(1, System.coreCount) }
}

public enum ModelError: Error, Equatable, CustomStringConvertible {
    case unsupportedArchitecture(String)
    case unsupportedTensorType(tensor: String, type: String)
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case contextFull(needed: Int, capacity: Int)
    case invalidBatch(String)
    case unsupportedKVFormat(format: String, headDim: Int)
    case perChannelValues

    public var description: String {
        switch self {
        case .unsupportedArchitecture(let a): "architecture '\(a)' is not supported (supported: \(ModelRegistry.architectures.joined(separator: ", ")))"
        case .unsupportedTensorType(let tensor, let type):
            "\(tensor): tensor type \(type) is not supported (supported: \(TensorFormat.all.map(\.name).joined(separator: ", ")))"
        case .tokenOutOfRange(let t, let v): "token id \(t) is outside the vocabulary of \(v) tokens"
        case .contextFull(let needed, let capacity): "the context needs \(needed) positions but holds only \(capacity)"
        case .invalidBatch(let problem): "invalid batch: \(problem)"
        case .unsupportedKVFormat(let format, let headDim):
            "KV cache type \(format) stores heads in blocks of 32 values; this model's heads have \(headDim) (use --kv-type f16)"
        case .perChannelValues: "kivi4 stores keys only: values take f16, q8_0 or q4_0"
        }
    }
}

/// Architecture names (`general.architecture`) mapped to their loaders.
public enum ModelRegistry {
    static let loaders: [String: @Sendable (GGUFFile, ModelOptions) throws -> any RuntimeModel] = [
        "llama": { try Llama(file: $0, options: $1, variant: .llama) },
        "qwen2": { try Llama(file: $0, options: $1, variant: .qwen2) },
        "qwen3": { try Llama(file: $0, options: $1, variant: .qwen3) },
        "gemma3": { try Gemma3(file: $0, options: $1) },
    ]

    public static var architectures: [String] { loaders.keys.sorted() }

    public static func load(_ file: GGUFFile, options: ModelOptions = ModelOptions()) throws -> any LanguageModel {
        let architecture = try file.metadata.string("general.architecture")
        guard let loader = loaders[architecture] else { throw ModelError.unsupportedArchitecture(architecture) }
        let model = try loader(file, options)
        if options.kvType.keys != .f16 {
            let tokens = try Tokenizer(file: file).encode(keyCalibrationText).prefix(model.trainedContextLength)
            try model.runtime.calibrateKeys(tokens: Array(tokens), forward: model.forward)
        }
        return model
    }
}

/// An architecture written on the shared `ModelRuntime`, as every registered one is.
protocol RuntimeModel: LanguageModel {
    var runtime: ModelRuntime { get }
}
