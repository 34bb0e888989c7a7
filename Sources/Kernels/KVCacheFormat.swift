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
