import Foundation

public enum Norm {
    /// RMSNorm (Zhang & Sennrich 2019): `y = x / sqrt(mean(x²) + eps) * weight`. The sum of
    /// squares is kept in double, as ggml does.
    public static func rms(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, count: Int, eps: Float,
                           into y: UnsafeMutablePointer<Float>) {
        var sum: Double = 0
        for i in 0..<count { sum += Double(x[i] * x[i]) }
        let mean = Float(sum / Double(count))
        let scale = 1 / (mean + eps).squareRoot()
        for i in 0..<count { y[i] = (x[i] * scale) * weight[i] }
    }
}
