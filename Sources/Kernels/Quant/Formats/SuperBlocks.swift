/// What the 256-value K-quant formats share: the 6-bit scales and minima of Q4_K and Q5_K
/// packed in 12 bytes (ggml's `get_scale_min_k4`), and the encoder's choice of those.
///
/// The encoders are plain min/max quantizers (scale and minimum per 32 values from the
/// range, then both rounded to 6 bits against the largest), not ggml's iterative
/// `make_qkx2_quants` search: the blocks they write are valid and decode as ggml decodes
/// them, a little less accurately than llama.cpp's `quantize` would make them.
enum SuperBlocks {
    /// Scale and minimum `j` (0..<8) of a 12-byte packed table.
    @inline(__always) static func scaleAndMin(_ j: Int, _ s: UnsafeRawPointer) -> (Int32, Int32) {
        func b(_ i: Int) -> Int32 { Int32(s.load(fromByteOffset: i, as: UInt8.self)) }
        if j < 4 { return (b(j) & 63, b(j + 4) & 63) }
        return ((b(j + 4) & 0xF) | ((b(j - 4) >> 6) << 4), (b(j + 4) >> 4) | ((b(j) >> 6) << 4))
    }

    static func packScalesAndMins(_ ls: [Int32], _ lm: [Int32], into s: UnsafeMutableRawPointer) {
        var out = [UInt8](repeating: 0, count: 12)
        for j in 0..<8 {
            if j < 4 {
                out[j] = UInt8(ls[j])
                out[j + 4] = UInt8(lm[j])
            } else {
                out[j + 4] = UInt8(ls[j] & 0xF) | UInt8(lm[j] & 0xF) << 4
                out[j - 4] |= UInt8(ls[j] >> 4) << 6
                out[j] |= UInt8(lm[j] >> 4) << 6
            }
        }
        for i in 0..<12 { s.storeBytes(of: out[i], toByteOffset: i, as: UInt8.self) }
    }

    /// Chooses `d`, `dmin` and the 6-bit scale and minimum of each group of 32 for values
    /// `0...levels`, writes `d` and `dmin` (f16) at bytes 0 and 2 and the packed table at 4,
    /// and returns each value's level.
    static func encodeAffine(_ x: UnsafePointer<Float>, levels: Int32, into y: UnsafeMutableRawPointer) -> [Int32] {
        var scales = [Float](repeating: 0, count: 8), minima = [Float](repeating: 0, count: 8)
        for j in 0..<8 {
            var lo: Float = 0, hi = -Float.greatestFiniteMagnitude
            for l in 0..<32 { lo = min(lo, x[32 * j + l]); hi = max(hi, x[32 * j + l]) }
            scales[j] = max(hi - lo, 0) / Float(levels)
            minima[j] = -lo
        }
        let maxScale = scales.max()!, maxMin = minima.max()!
        let d = maxScale / 63, dmin = maxMin / 63
        let ls = scales.map { d > 0 ? min(63, max(0, nearestInt($0 / d))) : 0 }
        let lm = minima.map { dmin > 0 ? min(63, max(0, nearestInt($0 / dmin))) : 0 }
        storeF16(d, y, 0)
        storeF16(dmin, y, 2)
        packScalesAndMins(ls, lm, into: y + 4)
        let dq = loadF16(UnsafeRawPointer(y), 0), mq = loadF16(UnsafeRawPointer(y), 2)
        var q = [Int32](repeating: 0, count: 256)
        for j in 0..<8 {
            let step = dq * Float(ls[j]), offset = mq * Float(lm[j])
            for l in 0..<32 where step > 0 { q[32 * j + l] = min(levels, max(0, nearestInt((x[32 * j + l] + offset) / step))) }
        }
        return q
    }
}
