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
}
