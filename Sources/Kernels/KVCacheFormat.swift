/// How a KV cache stores keys and values: f16, llama.cpp's default, or 32-value blocks of
/// Q8_0 or Q4_0 (llama.cpp's `-ctk`/`-ctv`; Atom and KIVI quantize KV to 8 and 4 bits), which
/// hold about twice and nearly four times as many positions in the same memory. Attention
/// scores quantized keys in integers against the query quantized to 8 bits (the matrix
/// kernels' arithmetic) and decodes quantized values to f32, as llama.cpp's CPU flash
/// attention does.
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

    /// Bytes of `width` values (keys or values of one position in one layer).
    public func rowBytes(_ width: Int) -> Int { tensorFormat.rowBytes(width) }

    /// Whether heads of `headDim` values are whole blocks, so each head's keys start a block.
    public func canStore(headDim: Int) -> Bool { headDim % tensorFormat.blockSize == 0 }
}
