/// What the 32-value formats of the first GGML generation share: nibbles (byte `k` holds
/// weight `k` low and `k + 16` high) and, for the 5-bit ones, the fifth bits in a
/// little-endian `UInt32` (`../shared/formats.md`). Encoders follow ggml's
/// `quantize_row_*_ref`.
enum LegacyBlocks {
    /// Q4_0/Q5_0: `d = max / -levels` (the signed value of largest magnitude), `q = x/d + levels`,
    /// clamped to `0...2·levels-1`.
    static func encodeSymmetric(_ x: UnsafePointer<Float>, levels: Float, into y: UnsafeMutableRawPointer, nibblesAt qs: Int, fifthBitsAt qhOffset: Int?) {
        var amax: Float = 0, signedMax: Float = 0
        for j in 0..<32 where amax < abs(x[j]) { amax = abs(x[j]); signedMax = x[j] }
        let top = Int32(2 * levels - 1)
        let d = signedMax / -levels
        let id: Float = d != 0 ? 1 / d : 0
        storeF16(d, y, 0)
        var qh: UInt32 = 0
        for j in 0..<16 {
            let q0 = min(top, Int32(Int8(truncatingIfNeeded: Int32((x[j] * id + (levels + 0.5)).rounded(.towardZero)))))
            let q1 = min(top, Int32(Int8(truncatingIfNeeded: Int32((x[j + 16] * id + (levels + 0.5)).rounded(.towardZero)))))
            y.storeBytes(of: UInt8(q0 & 0xF) | UInt8(q1 & 0xF) << 4, toByteOffset: qs + j, as: UInt8.self)
            qh |= UInt32((q0 & 0x10) >> 4) << j | UInt32((q1 & 0x10) >> 4) << (j + 16)
        }
        if let qhOffset { y.storeBytes(of: qh.littleEndian, toByteOffset: qhOffset, as: UInt32.self) }
    }

    /// Q4_1/Q5_1: `d = (max - min) / steps`, `m = min`, `q = (x - min)/d`.
    static func encodeWithMinimum(_ x: UnsafePointer<Float>, steps: Float, into y: UnsafeMutableRawPointer, nibblesAt qs: Int, fifthBitsAt qhOffset: Int?) {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        // ggml's comparisons, not min/max: of +0 and -0 the first seen stays, so an all-zero block's scale is +0 as in ggml.
        for j in 0..<32 {
            if x[j] < lo { lo = x[j] }
            if x[j] > hi { hi = x[j] }
        }
        let d = (hi - lo) / steps
        let id: Float = d != 0 ? 1 / d : 0
        storeF16(d, y, 0)
        storeF16(lo, y, 2)
        var qh: UInt32 = 0
        for j in 0..<16 {
            var q0 = Int32(UInt8(truncatingIfNeeded: Int32(((x[j] - lo) * id + 0.5).rounded(.towardZero))))
            var q1 = Int32(UInt8(truncatingIfNeeded: Int32(((x[j + 16] - lo) * id + 0.5).rounded(.towardZero))))
            if qhOffset == nil { q0 = min(15, q0); q1 = min(15, q1) }
            y.storeBytes(of: UInt8(q0 & 0xF) | UInt8(q1 & 0xF) << 4, toByteOffset: qs + j, as: UInt8.self)
            qh |= UInt32((q0 & 0x10) >> 4) << j | UInt32((q1 & 0x10) >> 4) << (j + 16)
        }
        if let qhOffset { y.storeBytes(of: qh.littleEndian, toByteOffset: qhOffset, as: UInt32.self) }
    }

    /// `x_j = d · (q_j - offset) + m` for the 4- and 5-bit formats.
    static func decode(_ y: UnsafeRawPointer, into x: UnsafeMutablePointer<Float>, nibblesAt qs: Int, fifthBitsAt qhOffset: Int?,
                       offset: Int32, minimumAt mOffset: Int?) {
        let d = loadF16(y, 0)
        let m: Float = mOffset.map { loadF16(y, $0) } ?? 0
        let qh: UInt32 = qhOffset.map { UInt32(littleEndian: y.loadUnaligned(fromByteOffset: $0, as: UInt32.self)) } ?? 0
        for j in 0..<16 {
            let byte = y.load(fromByteOffset: qs + j, as: UInt8.self)
            let q0 = Int32(byte & 0xF) | Int32((qh >> j) & 1) << 4
            let q1 = Int32(byte >> 4) | Int32((qh >> (j + 16)) & 1) << 4
            x[j] = Float(q0 - offset) * d + m
            x[j + 16] = Float(q1 - offset) * d + m
        }
    }
}
