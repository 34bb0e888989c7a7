import Foundation
import KernelsC

public enum Activation {
    /// Softmax in place: subtract the maximum, exponentiate, normalise.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        guard count > 0 else { return }
        var maximum = -Float.infinity
        for i in 0..<count { maximum = max(maximum, x[i]) }
        var sum: Double = 0
        for i in 0..<count {
            let e = expf(x[i] - maximum)
            x[i] = e
            sum += Double(e)
        }
        let inv = Float(1 / sum)
        for i in 0..<count { x[i] *= inv }
    }

    /// `x[i] = e^x[i]` in place; with AVX-512 a vector polynomial (within 2 ulp of libm's,
    /// and 0 below -86 where e^x would be subnormal).
    public static func exponentiate(_ x: UnsafeMutablePointer<Float>, count: Int) {
        if apus_exp(x, Int32(count)) != 0 { return }
        for i in 0..<count { x[i] = expf(x[i]) }
    }

    @inline(__always) public static func silu(_ x: Float) -> Float { x / (1 + expf(-x)) }

    /// SwiGLU (Shazeer 2020): `gate[i] = silu(gate[i]) * up[i]`, in place; with AVX-512 the
    /// exponential is a vector polynomial (within 2 ulp of libm's).
    public static func swiglu(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        if apus_swiglu(gate, up, Int32(count)) != 0 { return }
        for i in 0..<count { gate[i] = silu(gate[i]) * up[i] }
    }

    /// GELU with the tanh approximation (Hendrycks & Gimpel 2016), in float.
    @inline(__always) public static func geluTanh(_ x: Float) -> Float {
        0.5 * x * (1 + tanhf(0.79788456080286535587989211986876 * x * (1 + 0.044715 * x * x)))
    }

    /// llama.cpp's CPU GELU (`GGML_GELU_FP16`): the input rounded to f16 looks up
    /// f16(gelu(x)); below -10 it is 0 and from 10 on x itself. Reproduced because Gemma's
    /// gated feed-forward goes through it in the reference outputs.
    static let geluTable: [Float] = (0..<65536).map { bits in
        Float(Float16(geluTanh(Float(Float16(bitPattern: UInt16(bits))))))
    }

    @inline(__always) static func geluAsLlamaCpp(_ x: Float, _ table: UnsafePointer<Float>) -> Float {
        if x <= -10 { return 0 }
        if x >= 10 { return x }
        return table[Int(Float16(x).bitPattern)]
    }

    /// GEGLU (Shazeer 2020; Gemma): `gate[i] = gelu(gate[i]) * up[i]`, in place, with
    /// llama.cpp's f16-table GELU.
    public static func geglu(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        geluTable.withUnsafeBufferPointer { table in
            for i in 0..<count { gate[i] = geluAsLlamaCpp(gate[i], table.baseAddress!) * up[i] }
        }
    }

    /// The gated activations of the feed-forward networks Apus runs.
    public enum Gate: Sendable {
        /// SiLU gate (Llama, Qwen).
        case swiglu
        /// GELU-tanh gate (Gemma).
        case geglu

        public func apply(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int) {
            switch self {
            case .swiglu: Activation.swiglu(gate: gate, up: up, count: count)
            case .geglu: Activation.geglu(gate: gate, up: up, count: count)
            }
        }
    }
}
