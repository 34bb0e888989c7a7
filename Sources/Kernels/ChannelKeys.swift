/// Keys quantized per channel over a block of 16 positions, with a minimum (KIVI, Liu et al.
/// 2024): the `kivi4` key format.
///
/// Keys have channels whose values stay near one level across positions (outliers of a few
/// channels, and after RoPE the slowly turning pairs), so a scale and a minimum per channel
/// fit them far better than one scale per 32 values of a position, as Q4_0 has: SmolLM2 loses
/// 1.4% of perplexity with these keys and 6.8% with Q4_0's
/// (`bench/2026-12-06-kv-keys-per-channel.md`).
///
/// A block's scale and minimum depend on all 16 of its positions, so a block is quantized
/// ("sealed") once its last position is written; until then its keys are kept in f16
/// (KIVI's full-precision residual) in a staging area of the cache. A query reads the keys
/// of its own block from staging and every earlier block sealed, whatever was written
/// since, so a position's result does not depend on how the batch around it was formed.
///
/// Layout of one block of `width` channels (a multiple of 32): the levels, a row of
/// `width / 2` bytes per position (in each 16 bytes, byte `j` holds channel `32g + j` in its
/// low nibble and `32g + 16 + j` in its high one, as a Q4_0 block orders its values), then
/// each channel's f16 scale, then each channel's f16 minimum. Key = minimum + scale · level,
/// one fused multiply-add.
public enum ChannelKeys {
    public static let positions = 16

    /// Bytes of one block's keys of `width` channels.
    public static func blockBytes(width: Int) -> Int { width * (positions / 2 + 4) }

    /// Quantizes 16 positions of `width` keys (rows `width` apart in `keys`) into `block`.
    /// Levels are rounded against the f16 scale and minimum that are stored, so decoding
    /// reproduces what was chosen.
    public static func quantize(_ keys: UnsafePointer<Float16>, width: Int, into block: UnsafeMutableRawPointer) {
        precondition(width % 32 == 0, "kivi4 keys come in groups of 32 channels")
        let levels = block.assumingMemoryBound(to: UInt8.self)
        let scales = (block + width * positions / 2).assumingMemoryBound(to: Float16.self)
        let minima = scales + width
        levels.initialize(repeating: 0, count: width * positions / 2)
        for c in 0..<width {
            var lo = Float(keys[c]), hi = lo
            for p in 1..<positions {
                let x = Float(keys[p * width + c])
                lo = min(lo, x)
                hi = max(hi, x)
            }
            let minimum = Float16(lo), scale = Float16((hi - Float(minimum)) / 15)
            scales[c] = scale
            minima[c] = minimum
            let inverse: Float = scale == 0 ? 0 : 1 / Float(scale)
            let (byte, shift) = levelByte(c)
            for p in 0..<positions {
                let level = UInt8(min(15, max(0, ((Float(keys[p * width + c]) - Float(minimum)) * inverse).rounded())))
                levels[p * width / 2 + byte] |= level << shift
            }
        }
    }

    /// Channel `c`'s byte within a position's row of levels, and its nibble's shift.
    @inline(__always) static func levelByte(_ c: Int) -> (byte: Int, shift: UInt8) { (c / 32 * 16 + c % 16, c % 32 < 16 ? 0 : 4) }

    /// Decodes channels `channels` of positions `positions` (within the block) of `block`,
    /// a block of `width` channels, into rows `stride` apart in `out` (the first channel at
    /// offset 0 of each row).
    public static func dequantize(_ block: UnsafeRawPointer, width: Int, channels: Range<Int>, positions: Range<Int>,
                                  into out: UnsafeMutablePointer<Float>, stride: Int) {
        let levels = block.assumingMemoryBound(to: UInt8.self)
        let scales = (block + width * Self.positions / 2).assumingMemoryBound(to: Float16.self)
        let minima = scales + width
        for p in positions {
            let row = out + (p - positions.lowerBound) * stride
            for c in channels {
                let (byte, shift) = levelByte(c)
                let level = (levels[p * width / 2 + byte] >> shift) & 0x0F
                row[c - channels.lowerBound] = Float(minima[c]).addingProduct(Float(scales[c]), Float(level))
            }
        }
    }
}
