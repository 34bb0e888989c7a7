import Foundation
@testable import Kernels
import KernelsC
import TestSupport
import XCTest

final class QuantizationTests: XCTestCase {
    /// Activation quantization on every instruction-set level equals the reference exactly:
    /// quantized values (ties to even), scale and sum. One row has amax 127, so that values
    /// like 2.5 land exactly on ties.
    func testActivationQuantizationMatchesTheReferenceOnEveryLevel() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        var seed: UInt64 = 21
        let cols = 32 * 7, rows = 3
        var x = Reference.randomValues(rows * cols, seed: &seed, scale: 3)
        for j in 0..<cols { x[j] = j == 5 ? 127 : Float(j % 9) - 4.5 }
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            var blocks = [apus_q8_block](repeating: apus_q8_block(), count: rows * cols / 32)
            apus_quantize_q8(x, Int32(rows), Int32(cols), 1, &blocks)
            for (i, block) in blocks.enumerated() {
                let expected = Reference.quantizeActivationBlock(x[(32 * i)..<(32 * i + 32)])
                let q = withUnsafeBytes(of: block.qs) { Array($0.bindMemory(to: Int8.self)).map(Int.init) }
                XCTAssertEqual(q, expected.q, "\(level) block \(i)")
                XCTAssertEqual(block.d.bitPattern, expected.d.bitPattern, "\(level) block \(i)")
                XCTAssertEqual(block.s.bitPattern, expected.s.bitPattern, "\(level) block \(i)")
            }
        }
    }

    func testRoundTripErrorIsWithinEachFormatsStep() {
        var seed: UInt64 = 1
        // Each format's worst-case error for one value, from its block's range and magnitude.
        let bounds: [TensorFormat: (_ range: Float, _ amax: Float) -> Float] = [
            .f32: { _, _ in 0 },
            .f16: { _, amax in amax / 1024 },
            .bf16: { _, amax in amax / 128 },
            .q8_0: { _, amax in amax / 127 * 0.51 + 1e-3 },
            .q4_0: { _, amax in amax / 8 * 0.51 + amax / 8 * 0.01 + 1e-3 },
            .q5_0: { _, amax in amax / 16 * 0.51 + 1e-3 },
            .q4_1: { range, _ in range / 15 * 0.51 + 2e-3 },
            .q5_1: { range, _ in range / 31 * 0.51 + 2e-3 },
            // The K-quants round their scales and minima to 6 (Q6_K: 8) bits against the
            // largest in the super-block, which adds up to about half a step more.
            .q4_K: { range, _ in range / 15 * 1.2 + 2e-2 },
            .q5_K: { range, _ in range / 31 * 1.5 + 2e-2 },
            // Q6_K: the value of largest magnitude maps to -32, so its opposite clamps at 31.
            .q6_K: { _, amax in amax / 32 * 1.1 + 1e-2 },
            // Q2_K: min/max per sixteen, with 4-bit scales and minima; Q3_K: the value of
            // largest magnitude maps to -4, so its opposite clamps at 3 (a whole step).
            .q2_K: { range, _ in range / 3 * 0.7 + 2e-2 },
            .q3_K: { _, amax in amax / 4 * 1.25 + 2e-2 },
            // IQ4_NL and IQ4_XS: the largest value maps to the table's -127; the opposite
            // end of the table is 113, and the gaps there are 20 to 24 of those steps.
            .iq4_NL: { _, amax in amax * 0.14 + 1e-3 },
            .iq4_XS: { _, amax in amax * 0.15 + 2e-2 },
        ]
        for format in TensorFormat.all {
            let count = format.blockSize == 256 ? 256 * 3 : format.isQuantized ? 32 * 7 : 37
            let x = Reference.randomValues(count, seed: &seed, scale: 3)
            let y = Quantization.dequantize(Quantization.quantize(x, format: format), count: count, format: format)
            for b in stride(from: 0, to: count, by: 32) {
                let block = x[b..<min(count, b + 32)]
                let range = block.max()! - block.min()!
                let amax = block.map(abs).max()!
                let bound = bounds[format]!(range, amax)
                for j in block.indices {
                    // Q4_0 and Q5_0 clamp the extreme opposite to the largest value by one step.
                    let slack: Float = format == .q4_0 ? amax / 8 : format == .q5_0 ? amax / 16 : 0
                    XCTAssertLessThanOrEqual(abs(y[j] - x[j]), bound + slack, "\(format) at \(j)")
                }
            }
        }
    }

    /// Q8_K (the K-quants' partner) equals llama.cpp's rule written independently: values,
    /// scale and the sums of each sixteen, with ties landing on even values, on every
    /// instruction-set level.
    func testQ8KActivationQuantizationMatchesTheReference() {
        var seed: UInt64 = 22
        let cols = 256 * 4
        var x = Reference.randomValues(cols, seed: &seed, scale: 3)
        for j in 0..<256 { x[j] = j == 9 ? -127 : Float(j % 11) - 5.5 }  // ties at .5 after scaling by 1
        for j in 512..<768 { x[j] = 0 }  // an all-zero block
        x[768 + 20] = 6; x[768 + 40] = -6  // two of largest magnitude: the first sets the scale
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            defer { IntegerKernels.limit(to: IntegerKernels.available) }
            var blocks = [apus_q8k_block](repeating: apus_q8k_block(), count: 4)
            apus_quantize_q8k(x, 1, Int32(cols), &blocks)
            XCTAssertEqual(blocks[3].d, 1 / (-127 / Float(6)), "\(level)")
            for (i, block) in blocks.enumerated() {
                let slice = x[(256 * i)..<(256 * i + 256)]
                let max = slice.max(by: { abs($0) < abs($1) })!
                let iscale: Float = max == 0 ? 0 : -127 / max
                let q = slice.map { Swift.min(127, Int(($0 * iscale).rounded(.toNearestOrEven))) }
                XCTAssertEqual(withUnsafeBytes(of: block.qs) { Array($0.bindMemory(to: Int8.self)).map(Int.init) }, q, "block \(i)")
                XCTAssertEqual(block.d, max == 0 ? 0 : 1 / iscale, "block \(i)")
                let sums = (0..<16).map { g in q[(16 * g)..<(16 * g + 16)].reduce(0, +) }
                XCTAssertEqual(withUnsafeBytes(of: block.bsums) { Array($0.bindMemory(to: Int16.self)).map(Int.init) }, sums, "block \(i)")
            }
            XCTAssertEqual(blocks[0].qs.9, -127, "the value of largest magnitude maps to -127")
        }
    }

    /// A Q4_K block built by hand: d = 0.5, dmin = 0.25, group 0 scale 2 / min 3, group 5
    /// scale 33 / min 17 (the split 6-bit packing), nibbles k low and 15 - k high.
    func testKnownQ4KBlockDecodes() {
        var bytes = [UInt8](repeating: 0, count: 144)
        bytes[0] = 0x00; bytes[1] = 0x38  // d = 0.5
        bytes[2] = 0x00; bytes[3] = 0x34  // dmin = 0.25
        bytes[4] = 2; bytes[8] = 3  // group 0: scale 2, min 3
        // Group 5: scale 33 = 0b10_0001 (low four bits in byte 13's low nibble, top two in byte 5's top bits),
        // min 17 = 0b01_0001 (low four in byte 13's high nibble, top two in byte 9's top bits).
        bytes[13] = 0x1 | 0x1 << 4
        bytes[5] = 0b10 << 6
        bytes[9] = 0b01 << 6
        for l in 0..<32 { for n in 0..<4 { bytes[16 + 32 * n + l] = UInt8(l % 16) | UInt8(15 - l % 16) << 4 } }
        let y = Quantization.dequantize(bytes, count: 256, format: .q4_K)
        XCTAssertEqual(y[0], 0.5 * 2 * 0 - 0.25 * 3)
        XCTAssertEqual(y[7], 0.5 * 2 * 7 - 0.25 * 3)
        // Value 160 + l is group 5: the high nibbles of the third 64 (bytes 16 + 64 + l).
        XCTAssertEqual(y[160 + 3], 0.5 * 33 * 12 - 0.25 * 17)
    }

    /// A Q2_K block built by hand: d = 0.5, dmin = 0.25; group 0 scale 2 / min 3, group 5
    /// scale 11 / min 7; in the first half every byte holds levels 0, 1, 2, 3 (bit pairs
    /// for values l, 32 + l, 64 + l, 96 + l), except byte 3, whose value 3 has level 3.
    func testKnownQ2KBlockDecodes() {
        var bytes = [UInt8](repeating: 0, count: 84)
        bytes[80] = 0x00; bytes[81] = 0x38  // d = 0.5
        bytes[82] = 0x00; bytes[83] = 0x34  // dmin = 0.25
        bytes[0] = 2 | 3 << 4
        bytes[5] = 11 | 7 << 4
        for l in 0..<32 { bytes[16 + l] = 0b11_10_01_00 }
        bytes[16 + 3] = 0b11_10_01_11
        let y = Quantization.dequantize(bytes, count: 256, format: .q2_K)
        XCTAssertEqual(y[0], 0.5 * 2 * 0 - 0.25 * 3)
        XCTAssertEqual(y[3], 0.5 * 2 * 3 - 0.25 * 3)
        // Value 81 is group 5 and the third bit pair (level 2) of byte 16 + 17.
        XCTAssertEqual(y[81], 0.5 * 11 * 2 - 0.25 * 7)
        XCTAssertEqual(y[200], 0)
    }

    /// A Q3_K block built by hand: d = 0.5; group 0 scale 34 - 32 = 2, group 9 scale
    /// 20 - 32 = -12 (low nibble in byte 96 + 1's high half, top bits in byte 96 + 9 at
    /// bit 4); q = low - 4 where the high bit is clear.
    func testKnownQ3KBlockDecodes() {
        var bytes = [UInt8](repeating: 0, count: 110)
        bytes[108] = 0x00; bytes[109] = 0x38  // d = 0.5
        bytes[96 + 0] = 34 & 0xF; bytes[96 + 8] = 34 >> 4
        bytes[96 + 1] = (20 & 0xF) << 4; bytes[96 + 9] = (20 >> 4) << 4
        bytes[32 + 0] = 1; bytes[0] = 1  // value 0: low 1, high bit set: q = 1
        bytes[32 + 1] = 3  // value 1: low 3, high bit clear: q = -1
        // Value 146 = 128 + 18: second half, first bit pair of byte 32 + 32 + 18, high bit 4 of hmask[18].
        bytes[32 + 32 + 18] = 2; bytes[18] = 1 << 4
        let y = Quantization.dequantize(bytes, count: 256, format: .q3_K)
        XCTAssertEqual(y[0], 0.5 * 2 * 1)
        XCTAssertEqual(y[1], 0.5 * 2 * -1)
        XCTAssertEqual(y[146], 0.5 * -12 * 2)
        XCTAssertEqual(y[147], 0.5 * -12 * -4)
    }

    /// An IQ4_NL block built by hand: d = 0.5, byte k holds index k low and 15 - k high;
    /// values from ggml's table (-127 … 113).
    func testKnownIQ4NLBlockDecodes() {
        var bytes: [UInt8] = [0x00, 0x38]
        bytes += (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        let y = Quantization.dequantize(bytes, count: 32, format: .iq4_NL)
        XCTAssertEqual(y[0], 0.5 * -127)
        XCTAssertEqual(y[8], 0.5 * 1)
        XCTAssertEqual(y[15], 0.5 * 113)
        XCTAssertEqual(y[16], 0.5 * 113)
        XCTAssertEqual(y[31], 0.5 * -127)
    }

    /// An IQ4_XS block built by hand: d = 0.25; group 0 scale 36 - 32 = 4 (high bits 0b10
    /// in scales_h bits 0-1), group 3 scale 29 - 32 = -3 (low nibble in byte 5's high half,
    /// high bits 0b01 in scales_h bits 6-7); every group's byte k holds k low and 15 - k high.
    func testKnownIQ4XSBlockDecodes() {
        var bytes = [UInt8](repeating: 0, count: 136)
        bytes[0] = 0x00; bytes[1] = 0x34  // d = 0.25
        bytes[2] = 0b10 | 0b01 << 6
        bytes[4] = 36 & 0xF
        bytes[5] = (29 & 0xF) << 4
        for g in 0..<8 { for k in 0..<16 { bytes[8 + 16 * g + k] = UInt8(k) | UInt8(15 - k) << 4 } }
        let y = Quantization.dequantize(bytes, count: 256, format: .iq4_XS)
        XCTAssertEqual(y[0], 0.25 * 4 * -127)
        XCTAssertEqual(y[17], 0.25 * 4 * 89)  // index 14
        XCTAssertEqual(y[96 + 8], 0.25 * -3 * 1)
        XCTAssertEqual(y[96 + 31], 0.25 * -3 * -127)
    }

    func testKnownQ4_0BlockDecodes() {
        // d = 0.5 (f16 0x3800); byte k holds weight k (low nibble) and k + 16 (high nibble).
        var bytes: [UInt8] = [0x00, 0x38]
        bytes += (0..<16).map { UInt8($0) | UInt8(15 - $0) << 4 }
        let y = Quantization.dequantize(bytes, count: 32, format: .q4_0)
        XCTAssertEqual(y[0], -4)  // 0.5 * (0 - 8)
        XCTAssertEqual(y[15], 3.5)  // 0.5 * (15 - 8)
        XCTAssertEqual(y[16], 3.5)
        XCTAssertEqual(y[31], -4)
    }

    func testFastUnpackMatchesScalarDecoding() {
        var seed: UInt64 = 2
        for format in TensorFormat.all {
            let count = max(64, format.blockSize * 2)
            let x = Reference.randomValues(count, seed: &seed, scale: 2)
            let bytes = Quantization.quantize(x, format: format)
            let expected = Quantization.dequantize(bytes, count: count, format: format)
            bytes.withUnsafeBytes { raw in
                for b in 0..<(count / 32) {
                    let blk = format.layout.unpack(raw.baseAddress!, group: b)
                    for j in 0..<32 {
                        let q = j < 16 ? blk.low[j] : blk.high[j - 16]
                        XCTAssertEqual(blk.d * q + blk.m, expected[32 * b + j], accuracy: 1e-5, "\(format) group \(b) weight \(j)")
                    }
                }
            }
        }
    }

    func testHalfPrecisionRounding() {
        XCTAssertEqual(HalfPrecision.floatToBF16(1.0), 0x3F80)
        XCTAssertEqual(HalfPrecision.floatToBF16(Float(bitPattern: 0x3F80_8000)), 0x3F80, "ties go to even")
        XCTAssertEqual(HalfPrecision.floatToBF16(Float(bitPattern: 0x3F81_8000)), 0x3F82, "ties go to even")
        XCTAssertTrue(HalfPrecision.bf16ToFloat(HalfPrecision.floatToBF16(.nan)).isNaN)
        XCTAssertEqual(HalfPrecision.floatToF16(65504), 0x7BFF)
        XCTAssertEqual(HalfPrecision.f16ToFloat(0x3C00), 1)
    }

    /// A block of +0 and -0 (Qwen2.5-Coder-0.5B has one): ggml keeps the first zero as both
    /// minimum and maximum, so every byte is 0 (a -0 scale was the one difference from
    /// llama-quantize's files).
    func testSignedZerosEncodeAsGgmlDoes() {
        let x: [Float] = (0..<32).map { $0 % 3 == 0 ? 0 : -0.0 }
        for format in [TensorFormat.q4_1, .q5_1] {
            XCTAssertEqual(Quantization.quantize(x, format: format), [UInt8](repeating: 0, count: format.blockBytes), "\(format)")
        }
    }

    /// The encoders `apus quantize` uses write, byte for byte, what ggml's `ggml_quantize_chunk`
    /// (llama-quantize without an importance matrix) writes for the same input: 7 rows of 512
    /// heavy-tailed values with an all-zero group and a constant group. The expected FNV-1a
    /// hashes and sizes were printed by a C program calling llama.cpp 0c1e570's libggml-base.
    func testEncodersWriteTheBytesGgmlWrites() {
        var seed: UInt64 = 42
        var x = (0..<(7 * 512)).map { _ -> Float in
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            let v = Float(Int32(truncatingIfNeeded: seed >> 32)) * (1 / 2147483648 as Float)
            return v * v * v * 0.05
        }
        for i in 0..<32 { x[i] = 0 }
        for i in 1000..<1016 { x[i] = 0.01 }
        let expected: [(TensorFormat, Int, UInt64)] = [
            (.q4_K, 2016, 0xfc3dad8a6c830b77), (.q5_K, 2464, 0x47a7c66c4feabad6), (.q6_K, 2940, 0xc882e7ef6c7d5337),
            (.q8_0, 3808, 0xf5e6d5354454d6d6), (.q4_0, 2016, 0x80aa2ee090edf9d4), (.q4_1, 2240, 0x65b33832a68d6f5d),
            (.q5_0, 2464, 0x52452ba86f11a035), (.q5_1, 2688, 0x095c153abf73bbe4),
        ]
        for (format, size, hash) in expected {
            var bytes: [UInt8] = []
            for row in 0..<7 { bytes += Quantization.quantize(Array(x[(512 * row)..<(512 * row + 512)]), format: format) }
            XCTAssertEqual(bytes.count, size, "\(format)")
            let fnv = bytes.reduce(14695981039346656037 as UInt64) { ($0 ^ UInt64($1)) &* 1099511628211 }
            XCTAssertEqual(String(fnv, radix: 16), String(hash, radix: 16), "\(format): bytes differ from ggml's")
        }
    }

    /// The KV cache's Q4_0 rows (`KVCacheFormat.encode`): scales of least squared error
    /// among a few candidates, which decode with the plain Q4_0 decoder, never worse than the
    /// reference encoding on any block, and better over many (Gaussian blocks, as rotated keys
    /// are: measured 8% less squared error), on blocks of every kind, an all-zero one
    /// included.
    func testKVCacheQ4_0RowsHaveLessErrorThanTheReferenceEncoding() {
        var g = SplitMix(17)
        func gaussian() -> Float {
            let u = Float.random(in: Float.ulpOfOne..<1, using: &g), v = Float.random(in: 0..<1, using: &g)
            return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
        }
        var blocks: [[Float]] = (0..<400).map { _ in (0..<32).map { _ in gaussian() } }
        let gaussians = blocks.count
        blocks += (0..<50).map { _ in (0..<32).map { _ in Float.random(in: -3...3, using: &g) } }
        blocks += (0..<50).map { i in (0..<32).map { j in j == i % 32 ? 40 : gaussian() * 0.1 } }
        blocks += [[Float](repeating: 0, count: 32), [Float](repeating: -2.5, count: 32), (0..<32).map { Float($0) * 1e-6 },
                   (0..<32).map { Float($0 % 5) - 2 }]
        var referenceTotal: Float = 0, searchedTotal: Float = 0
        for (i, block) in blocks.enumerated() {
            func squaredError(_ bytes: [UInt8]) -> Float {
                let decoded = Quantization.dequantize(bytes, count: 32, format: .q4_0)
                return zip(decoded, block).map { ($0 - $1) * ($0 - $1) }.reduce(0, +)
            }
            let reference = squaredError(Quantization.quantize(block, format: .q4_0))
            var searched = [UInt8](repeating: 0, count: Q4_0Layout.blockBytes)
            block.withUnsafeBufferPointer { x in searched.withUnsafeMutableBytes { KVCacheFormat.q4_0.encode(x.baseAddress!, count: 32, into: $0.baseAddress!) } }
            let error = squaredError(searched)
            XCTAssertLessThanOrEqual(error, reference * (1 + 1e-6), "block \(i)")
            if i < gaussians { (referenceTotal, searchedTotal) = (referenceTotal + reference, searchedTotal + error) }
        }
        print("Gaussian blocks, Q4_0 squared error: searched / reference = \(searchedTotal / referenceTotal)")
        XCTAssertLessThan(searchedTotal, 0.95 * referenceTotal)
        let zeros = [Float](repeating: 0, count: 32)
        var bytes = [UInt8](repeating: 0xFF, count: Q4_0Layout.blockBytes)
        zeros.withUnsafeBufferPointer { x in bytes.withUnsafeMutableBytes { KVCacheFormat.q4_0.encode(x.baseAddress!, count: 32, into: $0.baseAddress!) } }
        XCTAssertEqual(Quantization.dequantize(bytes, count: 32, format: .q4_0), zeros)

        // A row of several blocks is encoded block by block.
        let row = (0..<96).map { _ in gaussian() }
        var whole = [UInt8](repeating: 0, count: 3 * Q4_0Layout.blockBytes), pieces = whole
        row.withUnsafeBufferPointer { x in
            whole.withUnsafeMutableBytes { KVCacheFormat.q4_0.encode(x.baseAddress!, count: 96, into: $0.baseAddress!) }
            pieces.withUnsafeMutableBytes { out in
                for b in 0..<3 { KVCacheFormat.q4_0.encode(x.baseAddress! + 32 * b, count: 32, into: out.baseAddress! + 18 * b) }
            }
        }
        XCTAssertEqual(whole, pieces)
    }
}
