import GGUF
import Kernels

/// Looks up a model's tensors in a GGUF file and checks each against the shape the
/// architecture expects, so a file that lies fails at load time with the tensor's name.
struct TensorBinder {
    let file: GGUFFile

    func has(_ name: String) -> Bool { file.tensor(named: name) != nil }

    /// Looks a tensor up and checks its shape; `keys` name the metadata that implies each
    /// dimension, so a mismatch is reported against the key that lies.
    private func info(_ name: String, dimensions expected: [Int], keys: [String]) throws -> (GGUFTensorInfo, TensorFormat) {
        guard let info = file.tensor(named: name) else { throw GGUFError(field: name, "tensor is missing") }
        guard info.dimensions == expected else {
            let d = expected.indices.first { $0 >= info.dimensions.count || info.dimensions[$0] != expected[$0] } ?? 0
            let key = d < keys.count ? keys[d] : name
            throw GGUFError(field: key, "implies shape \(expected) for \(name), but the tensor has shape \(info.dimensions)")
        }
        guard let format = TensorFormat(ggmlType: info.type.rawValue) else {
            throw ModelError.unsupportedTensorType(tensor: name, type: info.type.name)
        }
        return (info, format)
    }

    /// A weight matrix of `rows` outputs over `cols` inputs (ggml shape `[cols, rows]`),
    /// viewed in place.
    func matrix(_ name: String, rows: Int, cols: Int, keys: (rows: String, cols: String)) throws -> WeightMatrix {
        let (info, format) = try info(name, dimensions: [cols, rows], keys: [keys.cols, keys.rows])
        return WeightMatrix(format: format, rows: rows, cols: cols, data: file.data(of: info).baseAddress!)
    }

    /// A vector (a norm's weights), converted to fp32.
    func vector(_ name: String, count: Int, key: String) throws -> [Float] {
        let (info, format) = try info(name, dimensions: [count], keys: [key])
        return Quantization.dequantize(Array(file.data(of: info)), count: count, format: format)
    }
}
