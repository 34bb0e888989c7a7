/// The weight formats Apus computes with. Every format is handled in blocks of 32
/// values; plain float formats simply have no scale.
public enum TensorFormat: String, CaseIterable, Sendable {
    case f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0

    /// Values per block in storage (1 for plain float formats).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: 1
        default: 32
        }
    }

    public var blockBytes: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .q4_0: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q8_0: 34
        }
    }

    public var isQuantized: Bool { blockSize > 1 }

    /// Bytes of one row of `count` values (a whole number of blocks).
    public func rowBytes(_ count: Int) -> Int { count / blockSize * blockBytes }

    /// Whether a row of `count` values can be stored in this format.
    public func canStore(rowLength count: Int) -> Bool { count > 0 && count % blockSize == 0 }

    /// The 8-bit format llama.cpp quantizes activations to before multiplying them with
    /// weights of this format (nil: activations stay floating point).
    public var activationPartner: ActivationFormat {
        switch self {
        case .q4_0, .q5_0, .q8_0: .q8_0
        case .q4_1, .q5_1: .q8_1
        case .f16: .f16
        case .bf16: .bf16
        case .f32: .f32
        }
    }
}

/// How an activation row is represented inside a product with weights.
public enum ActivationFormat: Sendable {
    case q8_0, q8_1, f16, bf16, f32
}

/// Which arithmetic a model uses for activations inside products with quantized weights.
public enum ActivationPrecision: String, Sendable, CaseIterable {
    /// llama.cpp's path: activations quantized to Q8_0/Q8_1 (or rounded to F16/BF16).
    case int8
    /// The reference path: activations stay fp32, weights are dequantized.
    case fp32
}
