/// How a KV cache stores keys and values: f16, llama.cpp's default, or 32-value blocks of
/// Q8_0 or Q4_0 (llama.cpp's `-ctk`/`-ctv`; Atom and KIVI quantize KV to 8 and 4 bits), which
/// hold about twice and nearly four times as many positions in the same memory. Quantized
/// keys are stored as the model fitted them at load, less each channel's mean key and
/// scaled against its queries (`KeyTransform`, in Models). Q8_0 and Q4_0
/// keys and values are stored rotated (`Hadamard`), and attention scores the keys' blocks
/// against the query (rounded to f16, as for an f16 cache, but not quantized) and decodes
/// values to f32. `kivi4`, for keys only, quantizes each channel over a block of 16
/// positions with a minimum (`ChannelKeys`).
public enum KVCacheFormat: String, CaseIterable, Sendable {
    case f16, q8_0, q4_0, kivi4

    /// The name as given on the command line, in any case (`Q8_0`).
    public init?(name: String) {
        guard let format = Self.allCases.first(where: { $0.rawValue == name.lowercased() }) else { return nil }
        self = format
    }

    /// Whether keys are quantized per channel over a block's positions (`ChannelKeys`)
    /// rather than position by position.
    public var isPerChannel: Bool { self == .kivi4 }

    /// The tensor format of one position's row; not for `kivi4`, which has no rows.
    public var tensorFormat: TensorFormat {
        switch self {
        case .f16: .f16
        case .q8_0: .q8_0
        case .q4_0: .q4_0
        case .kivi4: preconditionFailure("kivi4 keys are stored per block, not in rows of a tensor format")
        }
    }

    /// The format's number in the KV transfer's wire header: ggml's type number, and 0xFE
    /// for `kivi4`, which ggml lacks.
    public var wireCode: UInt16 { isPerChannel ? 0xFE : UInt16(tensorFormat.ggmlType) }

    /// Whether keys and values are stored rotated by `Hadamard`, and queries and attention
    /// outputs rotated to match: every format quantized position by position, whose blocks
    /// an outlier channel would otherwise spoil; f16 stores them as they are, and `kivi4`
    /// gives each channel its own scale, which a rotation would mix (Qwen2.5-Coder-0.5B:
    /// perplexity 6.72 rotated against 5.45 not).
    public var isRotated: Bool { self == .q8_0 || self == .q4_0 }

    /// Encodes one position's `count` keys or values (rotated already, if the format is) into
    /// `row`: Q4_0 blocks with the scale of least squared error
    /// (`Q4_0Layout.quantizeMinimizingError`), other formats as their tensors are encoded.
    public func encode(_ x: UnsafePointer<Float>, count: Int, into row: UnsafeMutableRawPointer) {
        guard self == .q4_0 else { return Quantization.quantize(x, count: count, format: tensorFormat, into: row) }
        for b in 0..<(count / Q4_0Layout.blockValues) {
            Q4_0Layout.quantizeMinimizingError(x + b * Q4_0Layout.blockValues, into: row + b * Q4_0Layout.blockBytes)
        }
    }

    /// Bytes of `width` values (keys or values of one position in one layer); for `kivi4`
    /// a block's bytes shared out over its 16 positions.
    public func rowBytes(_ width: Int) -> Int {
        isPerChannel ? ChannelKeys.blockBytes(width: width) / ChannelKeys.positions : tensorFormat.rowBytes(width)
    }

    /// Whether heads of `headDim` values are whole blocks, so each head's keys start a block.
    public func canStore(headDim: Int) -> Bool { isPerChannel ? headDim % 32 == 0 : headDim % tensorFormat.blockSize == 0 }
}

/// How a KV cache stores its keys and its values, each in its own format (llama.cpp's `-ctk`
/// and `-ctv`). Keys carry most of a quantized cache's error, since a key's error scales
/// every score it enters while a value's is averaged by the softmax: SmolLM2-135M loses 0.8%
/// of perplexity with Q4_0 values and 2.6% with Q4_0 keys and values
/// (`bench/2026-12-07-kv-key-calibration.md`), so keys may stay finer than values.
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
