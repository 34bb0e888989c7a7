import Foundation
import TestSupport
import XCTest

@testable import Kernels

/// `kivi4` keys: each channel of a 16-position block in 4-bit levels over its own minimum and
/// scale (attention over them: `QuantizedKVAttentionTests`).
final class ChannelKeysTests: XCTestCase {
    /// Every decoded key lies within half a step of the original (plus the f16 rounding of the
    /// minimum and scale), on channels of very different offsets and spreads; a constant
    /// channel comes back exactly.
    func testABlockDecodesWithinHalfAStepPerChannel() {
        var g = SplitMix(3)
        for width in [32, 96, 192] {
            let offsets = (0..<width).map { c in c % 7 == 0 ? Float.random(in: -60...60, using: &g) : Float.random(in: -1...1, using: &g) }
            let spreads = (0..<width).map { c in c % 5 == 0 ? 0 : Float.random(in: 0.01...3, using: &g) }
            let keys = (0..<(16 * width)).map { i in Float16(offsets[i % width] + Float.random(in: -1...1, using: &g) * spreads[i % width]) }
            var block = [UInt8](repeating: 0, count: ChannelKeys.blockBytes(width: width))
            XCTAssertEqual(block.count, width * 12)
            keys.withUnsafeBufferPointer { k in block.withUnsafeMutableBytes { ChannelKeys.quantize(k.baseAddress!, width: width, into: $0.baseAddress!) } }
            var decoded = [Float](repeating: .nan, count: 16 * width)
            block.withUnsafeBytes { b in
                decoded.withUnsafeMutableBufferPointer { ChannelKeys.dequantize(b.baseAddress!, width: width, channels: 0..<width, positions: 0..<16, into: $0.baseAddress!, stride: width) }
            }
            for c in 0..<width {
                let column = (0..<16).map { Float(keys[$0 * width + c]) }
                let step = (column.max()! - column.min()!) / 15
                for p in 0..<16 {
                    let error = abs(decoded[p * width + c] - column[p])
                    if spreads[c] == 0 {
                        XCTAssertEqual(decoded[p * width + c], column[p], "width \(width) constant channel \(c)")
                    } else {
                        XCTAssertLessThanOrEqual(error, step / 2 + 2e-3 * (abs(column[p]) + step), "width \(width) channel \(c) position \(p)")
                    }
                }
            }
            // A sub-range of channels and positions decodes the same values.
            var part = [Float](repeating: .nan, count: 5 * 16)
            block.withUnsafeBytes { b in
                part.withUnsafeMutableBufferPointer { ChannelKeys.dequantize(b.baseAddress!, width: width, channels: 3..<15, positions: 7..<12, into: $0.baseAddress!, stride: 16) }
            }
            for p in 7..<12 { for c in 3..<15 { XCTAssertEqual(part[(p - 7) * 16 + c - 3], decoded[p * width + c], "width \(width) channel \(c) position \(p)") } }
        }
    }
}
