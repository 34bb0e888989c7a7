extension MatMul {
    /// The dot product of one stored weight row with `x`, computed as the matrix kernels
    /// compute it (activations converted per `precision`).
    public static func dot(_ row: UnsafeRawPointer, format: TensorFormat, _ x: UnsafePointer<Float>, count: Int,
                           precision: ActivationPrecision) -> Float {
        var scratch = PreparedActivations()
        defer { scratch.release() }
        var y: Float = 0
        MatMul.multiply(WeightMatrix(format: format, rows: 1, cols: count, data: row), x, tokens: 1, into: &y,
                        precision: precision, pool: ThreadPool(threads: 1), scratch: &scratch)
        return y
    }
}
