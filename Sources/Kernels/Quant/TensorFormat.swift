import KernelsC

/// A weight format, described once: its block geometry, the activation format llama.cpp
/// pairs it with, its C kernel and its Swift layout (llama.cpp's `type_traits` row). Each
/// format is one file in `Formats/` declaring its value and its layout; nothing else
/// switches over formats.
/// Sendable by hand: `layout` is the metatype of a stateless enum.
public struct TensorFormat: @unchecked Sendable, Hashable, CustomStringConvertible {
    /// ggml's name, as `apus inspect` and error messages show it (`Q4_K`).
    public let name: String
    /// ggml's number for the type (`enum ggml_type`).
    public let ggmlType: UInt32
    /// Values per stored block (1 for plain float formats, 32 or 256 for quantized ones).
    public let blockSize: Int
    /// Bytes per stored block.
    public let blockBytes: Int
    /// The format llama.cpp converts the activation row to before multiplying it with
    /// weights of this format.
    public let activationPartner: ActivationFormat
    /// The C kernels' number for this format (ggml's numbering), nil where only the Swift
    /// kernels compute it.
    let cKernel: Int32?
    /// How the Swift kernels and the scalar conversions read and write its blocks.
    let layout: any WeightBlockLayout.Type

    init(name: String, ggmlType: UInt32, activationPartner: ActivationFormat, cKernel: Int32?, layout: any WeightBlockLayout.Type) {
        self.name = name
        self.ggmlType = ggmlType
        self.blockSize = layout.blockValues
        self.blockBytes = layout.blockBytes
        self.activationPartner = activationPartner
        self.cKernel = cKernel
        self.layout = layout
    }

    /// Every format Apus computes with.
    public static let all: [TensorFormat] = [.f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .iq4_NL,
                                              .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_XS]

    /// The format with ggml's number `ggmlType`, or nil when Apus cannot compute with it.
    public init?(ggmlType: UInt32) {
        guard let format = Self.all.first(where: { $0.ggmlType == ggmlType }) else { return nil }
        self = format
    }

    public static func == (a: TensorFormat, b: TensorFormat) -> Bool { a.ggmlType == b.ggmlType }
    public func hash(into hasher: inout Hasher) { hasher.combine(ggmlType) }
    public var description: String { name }

    public var isQuantized: Bool { blockSize > 1 }

    /// Bytes of one row of `count` values (a whole number of blocks).
    public func rowBytes(_ count: Int) -> Int { count / blockSize * blockBytes }

    /// Whether a row of `count` values can be stored in this format.
    public func canStore(rowLength count: Int) -> Bool { count > 0 && count % blockSize == 0 }
}

/// How an activation row is represented inside a product with weights.
public enum ActivationFormat: Sendable {
    /// 32 values per block, f16 scale (`../shared/formats.md`).
    case q8_0
    /// Q8_0 plus the block's scaled sum, against formats with a minimum.
    case q8_1
    /// 256 values per block, f32 scale, sums of each 16 (the K-quants' partner).
    case q8_K
    case f16, bf16, f32
}

/// Which arithmetic a model uses for activations inside products with quantized weights.
public enum ActivationPrecision: String, Sendable, CaseIterable {
    /// llama.cpp's path: activations quantized to Q8_0/Q8_1/Q8_K (or rounded to F16/BF16).
    case int8
    /// The reference path: activations stay fp32, weights are dequantized.
    case fp32
}
