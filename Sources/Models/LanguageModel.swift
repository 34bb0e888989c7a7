import GGUF
import Kernels

/// A decoder-only language model: token ids in, next-token logits out.
public protocol LanguageModel: AnyObject, Sendable {
    var architecture: String { get }
    var vocabularySize: Int { get }
    /// The context length the model was trained for (from its metadata).
    var trainedContextLength: Int { get }

    /// A KV cache for up to `capacity` positions.
    func makeCache(capacity: Int) -> KVCache

    /// Runs `tokens` at positions `cache.length ..< cache.length + tokens.count`, appends
    /// their keys and values to `cache`, and returns the logits of the tokens at
    /// `logitRows` (indices into `tokens`), one row of `vocabularySize` values each.
    func forward(_ tokens: [Int], cache: KVCache, logitRows: Range<Int>) throws -> [Float]
}

/// Options that change how a model computes, not what it is.
public struct ModelOptions: Sendable {
    public var threads: Int
    public var precision: ActivationPrecision

    public init(threads: Int = ModelOptions.defaultThreads, precision: ActivationPrecision = .int8) {
        self.threads = threads
        self.precision = precision
    }

    public static var defaultThreads: Int { max(1, System.coreCount) }
}

public enum ModelError: Error, Equatable, CustomStringConvertible {
    case unsupportedArchitecture(String)
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case contextFull(needed: Int, capacity: Int)

    public var description: String {
        switch self {
        case .unsupportedArchitecture(let a): "architecture '\(a)' is not supported (supported: \(ModelRegistry.architectures.joined(separator: ", ")))"
        case .tokenOutOfRange(let t, let v): "token id \(t) is outside the vocabulary of \(v) tokens"
        case .contextFull(let needed, let capacity): "the context needs \(needed) positions but holds only \(capacity)"
        }
    }
}

/// Architecture names (`general.architecture`) mapped to their loaders.
public enum ModelRegistry {
    static let loaders: [String: @Sendable (GGUFFile, ModelOptions) throws -> any LanguageModel] = [
        "llama": { try Llama(file: $0, options: $1) },
    ]

    public static var architectures: [String] { loaders.keys.sorted() }

    public static func load(_ file: GGUFFile, options: ModelOptions = ModelOptions()) throws -> any LanguageModel {
        let architecture = try file.metadata.string("general.architecture")
        guard let loader = loaders[architecture] else { throw ModelError.unsupportedArchitecture(architecture) }
        return try loader(file, options)
    }
}
