import Foundation
@testable import Kernels
import KernelsC
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
        for format in TensorFormat.allCases {
            let count = format.isQuantized ? 32 * 7 : 37
            let x = Reference.randomValues(count, seed: &seed, scale: 3)
            let y = Quantization.dequantize(Quantization.quantize(x, format: format), count: count, format: format)
            for b in stride(from: 0, to: count, by: 32) {
                let block = x[b..<min(count, b + 32)]
                let range = block.max()! - block.min()!
                let amax = block.map(abs).max()!
                let bound: Float = switch format {
                case .f32: 0
                case .f16: amax / 1024
                case .bf16: amax / 128
                case .q8_0: amax / 127 * 0.51 + 1e-3
                case .q4_0: amax / 8 * 0.51 + amax / 8 * 0.01 + 1e-3
                case .q5_0: amax / 16 * 0.51 + 1e-3
                case .q4_1: range / 15 * 0.51 + 2e-3
                case .q5_1: range / 31 * 0.51 + 2e-3
                }
                for j in block.indices {
                    // Q4_0 and Q5_0 clamp the extreme opposite to the largest value by one step.
                    let slack: Float = format == .q4_0 ? amax / 8 : format == .q5_0 ? amax / 16 : 0
                    XCTAssertLessThanOrEqual(abs(y[j] - x[j]), bound + slack, "\(format) at \(j)")
                }
            }
        }
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
        for format in TensorFormat.allCases {
            let x = Reference.randomValues(64, seed: &seed, scale: 2)
            let bytes = Quantization.quantize(x, format: format)
            let expected = Quantization.dequantize(bytes, count: 64, format: format)
            bytes.withUnsafeBytes { raw in
                let w = WeightMatrix(format: format, rows: 1, cols: 64, data: raw.baseAddress!)
                for b in 0..<2 {
                    let blk: UnpackedBlock = switch format {
                    case .f32: F32Layout.unpack(w.data + b * F32Layout.bytesPer32)
                    case .f16: F16Layout.unpack(w.data + b * F16Layout.bytesPer32)
                    case .bf16: BF16Layout.unpack(w.data + b * BF16Layout.bytesPer32)
                    case .q4_0: Q4_0Layout.unpack(w.data + b * 18)
                    case .q4_1: Q4_1Layout.unpack(w.data + b * 20)
                    case .q5_0: Q5_0Layout.unpack(w.data + b * 22)
                    case .q5_1: Q5_1Layout.unpack(w.data + b * 24)
                    case .q8_0: Q8_0Layout.unpack(w.data + b * 34)
                    }
                    for j in 0..<32 {
                        let q = j < 16 ? blk.low[j] : blk.high[j - 16]
                        XCTAssertEqual(blk.d * q + blk.m, expected[32 * b + j], accuracy: 1e-6, "\(format) block \(b) weight \(j)")
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
}
