/// What the 256-value K-quant formats share: the 6-bit scales and minima of Q4_K and Q5_K
/// packed in 12 bytes (ggml's `get_scale_min_k4`), and the encoders' searches for a group's
/// scale: the same rules as ggml's `quantize_row_q4_K_ref`, `_q5_K_ref` and `_q6_K_ref`
/// (`make_qkx2_quants`, `make_qx_quants`), so `apus quantize` writes the blocks
/// llama-quantize writes without an importance matrix. Q2_K and Q3_K keep plain min/max
/// encoders (no `quantize` type produces them).
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

    /// ggml treats a group whose largest magnitude is below this as all zeros.
    static let groupMaxEpsilon: Float = 1e-15

    /// Levels `0...nmax` for `n` values as `scale · L − offset`: first from the range, then
    /// from weighted least squares over `steps + 1` trial scales `(nmax + rmin + rdelta·i) /
    /// range`, keeping the trial of least weighted squared error (ggml's `make_qkx2_quants`).
    /// As in ggml, a better trial's minimum becomes the origin and range of the trials after it.
    static func fitAffine(_ x: UnsafePointer<Float>, count n: Int, weights w: UnsafePointer<Float>, nmax: Int32,
                          rmin: Float, rdelta: Float, steps: Int, levels: UnsafeMutablePointer<UInt8>) -> (scale: Float, offset: Float) {
        var lo = x[0], hi = x[0]
        var sumW = w[0], sumX = w[0] * x[0]
        for i in 1..<n {
            lo = min(lo, x[i]); hi = max(hi, x[i])
            sumW += w[i]
            sumX += w[i] * x[i]
        }
        if lo > 0 { lo = 0 }
        if hi == lo {
            for i in 0..<n { levels[i] = 0 }
            return (0, -lo)
        }
        var iscale = Float(nmax) / (hi - lo)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = UInt8(min(nmax, max(0, nearestInt(iscale * (x[i] - lo)))))
            levels[i] = l
            let diff = scale * Float(l) + lo - x[i]
            bestError += w[i] * (diff * diff)
        }
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: n) { trial in
            for step in 0...steps {
                iscale = (rmin + rdelta * Float(step) + Float(nmax)) / (hi - lo)
                var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
                for i in 0..<n {
                    let l = min(nmax, max(0, nearestInt(iscale * (x[i] - lo))))
                    trial[i] = UInt8(l)
                    let fl = Float(l)
                    sumL += w[i] * fl
                    sumL2 += w[i] * fl * fl
                    sumXL += w[i] * fl * x[i]
                }
                let det = sumW * sumL2 - sumL * sumL
                guard det > 0 else { continue }
                var trialScale = (sumW * sumXL - sumX * sumL) / det
                var trialMin = (sumL2 * sumX - sumL * sumXL) / det
                if trialMin > 0 {
                    trialMin = 0
                    trialScale = sumXL / sumL2
                }
                var error: Float = 0
                for i in 0..<n {
                    let diff = trialScale * Float(trial[i]) + trialMin - x[i]
                    error += w[i] * (diff * diff)
                }
                if error < bestError {
                    for i in 0..<n { levels[i] = trial[i] }
                    bestError = error
                    scale = trialScale
                    lo = trialMin
                }
            }
        }
        return (scale, -lo)
    }

    /// Signed levels `-nmax..<nmax` (stored `+ nmax`) for `n` values as `scale · L`: the value
    /// of largest magnitude maps to `-nmax`, then nineteen trial scales around it are weighed
    /// by `x²` and the best least-squares fit kept (ggml's `make_qx_quants` with `rmse_type`
    /// 1 and no importance weights).
    static func fitSymmetric(_ x: UnsafePointer<Float>, count n: Int, nmax: Int32, levels: UnsafeMutablePointer<Int8>) -> Float {
        var amax: Float = 0, signedMax: Float = 0
        for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); signedMax = x[i] }
        if amax < groupMaxEpsilon {
            for i in 0..<n { levels[i] = 0 }
            return 0
        }
        func level(_ i: Int, _ iscale: Float) -> Int32 { max(-nmax, min(nmax - 1, nearestInt(iscale * x[i]))) }
        var iscale = -Float(nmax) / signedMax
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = level(i, iscale)
            levels[i] = Int8(l + nmax)
            let weight = x[i] * x[i], fl = Float(l)
            sumLX += weight * x[i] * fl
            sumL2 += weight * fl * fl
        }
        var scale = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for trial in -9...9 where trial != 0 {
            iscale = -(Float(nmax) + 0.1 * Float(trial)) / signedMax
            sumLX = 0; sumL2 = 0
            for i in 0..<n {
                let weight = x[i] * x[i], fl = Float(level(i, iscale))
                sumLX += weight * x[i] * fl
                sumL2 += weight * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { levels[i] = Int8(level(i, iscale) + nmax) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }

    /// Q4_K's and Q5_K's encoder: per group of 32 an affine fit weighted by `rms + |x|`, the
    /// eight scales and minima rounded to 6 bits against the largest of each, `d` and `dmin`
    /// (f16) written at bytes 0 and 2 and the packed table at 4; returns each value's level,
    /// refitted against the rounded scales (a group whose scale rounds to zero keeps its fit).
    static func encodeAffine(_ x: UnsafePointer<Float>, nmax: Int32, rmin: Float, steps: Int, into y: UnsafeMutableRawPointer) -> [UInt8] {
        var levels = [UInt8](repeating: 0, count: 256)
        var scales = [Float](repeating: 0, count: 8), offsets = [Float](repeating: 0, count: 8)
        var maxScale: Float = 0, maxOffset: Float = 0
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32) { weights in
            levels.withUnsafeMutableBufferPointer { levels in
                for j in 0..<8 {
                    let group = x + 32 * j
                    var sumX2: Float = 0
                    for l in 0..<32 { sumX2 += group[l] * group[l] }
                    let rms = (sumX2 / 32).squareRoot()
                    for l in 0..<32 { weights[l] = rms + abs(group[l]) }
                    (scales[j], offsets[j]) = fitAffine(group, count: 32, weights: weights.baseAddress!, nmax: nmax, rmin: rmin, rdelta: 0.1,
                                                        steps: steps, levels: levels.baseAddress! + 32 * j)
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if offsets[j] > maxOffset { maxOffset = offsets[j] }
                }
            }
        }
        let inverseScale: Float = maxScale > 0 ? 63 / maxScale : 0, inverseOffset: Float = maxOffset > 0 ? 63 / maxOffset : 0
        // ggml stores the rounded value as uint8_t before clamping; a negative one wraps and clamps to 63.
        func sixBits(_ v: Float) -> Int32 { Int32(min(63, UInt8(truncatingIfNeeded: nearestInt(v)))) }
        let ls = scales.map { sixBits(inverseScale * $0) }, lm = offsets.map { sixBits(inverseOffset * $0) }
        packScalesAndMins(ls, lm, into: y + 4)
        storeF16(maxScale / 63, y, 0)
        storeF16(maxOffset / 63, y, 2)
        let d = loadF16(UnsafeRawPointer(y), 0), dmin = loadF16(UnsafeRawPointer(y), 2)
        for j in 0..<8 {
            let (sc, m) = scaleAndMin(j, UnsafeRawPointer(y) + 4)
            let step = d * Float(sc)
            if step == 0 { continue }
            let offset = dmin * Float(m)
            for l in 0..<32 { levels[32 * j + l] = UInt8(min(nmax, max(0, nearestInt((x[32 * j + l] + offset) / step)))) }
        }
        return levels
    }
}
