/// How a KV cache stores keys and values: f16, llama.cpp's default, or 32-value blocks of
/// Q8_0 or Q4_0 (llama.cpp's `-ctk`/`-ctv`; Atom and KIVI quantize KV to 8 and 4 bits), which
/// hold about twice and nearly four times as many positions in the same memory. Quantized
/// keys and values are stored rotated (`Hadamard`), and attention scores the keys' blocks
/// against the query (rounded to f16, as for an f16 cache, but not quantized) and decodes
/// values to f32.
public enum KVCacheFormat: String, CaseIterable, Sendable {
    case f16, q8_0, q4_0

    /// The name as given on the command line, in any case (`Q8_0`).
    public init?(name: String) {
        guard let format = Self.allCases.first(where: { $0.rawValue == name.lowercased() }) else { return nil }
        self = format
    }

    public var tensorFormat: TensorFormat {
        switch self {
        case .f16: .f16
        case .q8_0: .q8_0
        case .q4_0: .q4_0
        }
    }

    /// Whether keys and values are stored rotated by `Hadamard`, and queries and attention
    /// outputs rotated to match: every quantized format, whose blocks an outlier channel
    /// would otherwise spoil; f16 stores them as they are.
    public var isRotated: Bool { self != .f16 }

    /// Bytes of `width` values (keys or values of one position in one layer).
    public func rowBytes(_ width: Int) -> Int { tensorFormat.rowBytes(width) }

    /// Whether heads of `headDim` values are whole blocks, so each head's keys start a block.
    public func canStore(headDim: Int) -> Bool { headDim % tensorFormat.blockSize == 0 }
}

/// How a KV cache stores its keys and its values, each in its own format (llama.cpp's `-ctk`
/// and `-ctv`). Keys carry nearly all of a quantized cache's error, since a key's error
/// scales every score it enters while a value's is averaged by the softmax: Qwen2.5-Coder-0.5B
/// loses 3.7% of perplexity with Q8_0 keys and nothing with Q4_0 values
/// (`bench/2026-12-06-kv-key-value-types.md`), so keys may stay finer than values.
public struct KVCacheType: Sendable, Hashable, CustomStringConvertible {
    public var keys: KVCacheFormat
    public var values: KVCacheFormat

    public init(keys: KVCacheFormat, values: KVCacheFormat) {
        self.keys = keys
        self.values = values
    }

    /// Keys and values alike.
    public init(_ both: KVCacheFormat) { self.init(keys: both, values: both) }

    public static let f16 = KVCacheType(.f16)

    /// `q8_0`, or `k q8_0, v q4_0` when they differ.
    public var description: String { keys == values ? keys.rawValue : "k \(keys.rawValue), v \(values.rawValue)" }

    /// Bytes of `width` keys and `width` values (one position in one layer).
    public func rowBytes(_ width: Int) -> Int { keys.rowBytes(width) + values.rowBytes(width) }

    /// Whether heads of `headDim` values are whole blocks of both formats.
    public func canStore(headDim: Int) -> Bool { keys.canStore(headDim: headDim) && values.canStore(headDim: headDim) }

    public var isF16: Bool { keys == .f16 && values == .f16 }
}
