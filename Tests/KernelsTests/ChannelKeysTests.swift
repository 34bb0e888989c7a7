import Foundation
import XCTest

@testable import Kernels

/// `kivi4` keys: each channel of a 16-position block in 4-bit levels over its own minimum and
/// scale, and attention that reads a query's own block from the staged f16 keys and every
/// other block sealed, on every instruction-set level.
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

    /// Sequences of 37 and 700 positions in shuffled blocks, every block both sealed and
    /// staged (as a block the writer has just filled is): each query against a double
    /// reference that takes its own block's keys in f16 and every other block's decoded, and
    /// bitwise the same result alone as in the batch.
    func testAttentionReadsItsOwnBlockStagedAndTheRestSealed() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
        IntegerKernels.limit(to: level)
        for values in [KVCacheFormat.q4_0, .f16] {
            let type = KVCacheType(keys: .kivi4, values: values)
            for (d, heads, kvHeads, window) in [(64, 6, 2, nil), (32, 4, 4, nil), (256, 4, 1, 100 as Int?)] {
                let shape = Attention.Shape(heads: heads, kvHeads: kvHeads, headDim: d, window: window)
                let width = shape.kvStride, bs = 16, lengths = [37, 700]
                let keyRowBytes = type.keys.rowBytes(width), valueRowBytes = type.values.rowBytes(width)
                var g = SplitMix(UInt64(d + heads))
                let counts = lengths.map { ($0 + bs - 1) / bs }
                var order = Array(0..<counts.reduce(0, +)).map(Int32.init)
                order.shuffle(using: &g)
                var keys = [UInt8](repeating: 0xFF, count: order.count * bs * keyRowBytes)
                var valueBytes = [UInt8](repeating: 0xFF, count: order.count * bs * valueRowBytes)
                var staged = [[Float16]](repeating: [Float16](repeating: 0, count: bs * width), count: order.count)
                var tables: [[Int32]] = [], raw: [[Float]] = [], sealed: [[Float]] = [], decodedValues: [[Float]] = []
                var next = 0
                for (s, n) in counts.enumerated() {
                    let table = Array(order[next..<(next + n)])
                    next += n
                    tables.append(table)
                    // Keys with a few large, steady channels, as real keys have.
                    let k = (0..<(n * bs * width)).map { i in Float16((i % width % 9 == 0 ? 20 : 0) + Float.random(in: -2...2, using: &g)) }
                    var dv: [Float] = []
                    for p in 0..<lengths[s] {
                        let v = (0..<width).map { _ in Float.random(in: -1...1, using: &g) }
                        let vq = Quantization.quantize(v, format: values.tensorFormat)
                        let row = Int(table[p / bs]) * bs + p % bs
                        valueBytes.replaceSubrange((row * valueRowBytes)..<((row + 1) * valueRowBytes), with: vq)
                        dv += Quantization.dequantize(vq, count: width, format: values.tensorFormat)
                    }
                    var decoded = [Float](repeating: 0, count: n * bs * width)
                    for (j, b) in table.enumerated() {
                        let blockKeys = Array(k[(j * bs * width)..<((j + 1) * bs * width)])
                        staged[Int(b)] = blockKeys
                        keys.withUnsafeMutableBytes { out in
                            blockKeys.withUnsafeBufferPointer { ChannelKeys.quantize($0.baseAddress!, width: width, into: out.baseAddress! + Int(b) * bs * keyRowBytes) }
                        }
                        keys.withUnsafeBytes { block in
                            decoded.withUnsafeMutableBufferPointer {
                                ChannelKeys.dequantize(block.baseAddress! + Int(b) * bs * keyRowBytes, width: width, channels: 0..<width, positions: 0..<bs,
                                                       into: $0.baseAddress! + j * bs * width, stride: width)
                            }
                        }
                    }
                    raw.append(k.map { Float($0) })
                    sealed.append(decoded)
                    decodedValues.append(dv)
                }
                let queries: [(row: Int, sequence: Int, position: Int)] = [(0, 0, 36), (1, 1, 699), (2, 1, 5), (3, 0, 15), (4, 1, 16), (5, 0, 0)]
                let q = (0..<(queries.count * heads * d)).map { _ in Float.random(in: -1...1, using: &g) }

                func attend(_ q: [Float], _ queries: [(row: Int, sequence: Int, position: Int)]) -> [Float] {
                    var out = [Float](repeating: 0, count: q.count)
                    let tablePointers = tables.map { table in
                        let p = UnsafeMutablePointer<Int32>.allocate(capacity: table.count)
                        p.initialize(from: table, count: table.count)
                        return p
                    }
                    defer { tablePointers.forEach { $0.deallocate() } }
                    let stagedPointers = staged.map { block in
                        let p = UnsafeMutablePointer<Float16>.allocate(capacity: block.count)
                        p.initialize(from: block, count: block.count)
                        return Optional(p)
                    }
                    defer { stagedPointers.forEach { $0!.deallocate() } }
                    keys.withUnsafeBytes { k in
                        valueBytes.withUnsafeBytes { v in
                            stagedPointers.withUnsafeBufferPointer { s in
                                let batch = queries.map { Attention.Query(row: $0.row, position: $0.position, blockTable: tablePointers[$0.sequence]) }
                                let layer = Attention.PagedLayer(keys: k.baseAddress!, values: v.baseAddress!, blockSize: bs, type: type, keyRowBytes: keyRowBytes,
                                                                 valueRowBytes: valueRowBytes, stagedKeys: Attention.StagedKeys(blocks: s.baseAddress!, offset: 0))
                                batch.withUnsafeBufferPointer { Attention.causal(queries: q, batch: $0, cache: layer, shape: shape, into: &out, pool: ThreadPool(threads: 2)) }
                            }
                        }
                    }
                    return out
                }

                let out = attend(q, queries)
                for query in queries {
                    let s = query.sequence
                    for h in 0..<heads {
                        let base = query.row * heads * d + h * d, kv = h / (heads / kvHeads)
                        let qh = q[base..<(base + d)].map { Double(Float(Float16($0))) }
                        let first = window.map { max(0, query.position + 1 - $0) } ?? 0
                        let scores = (first...query.position).map { p in
                            let key = p / bs == query.position / bs ? raw[s] : sealed[s]
                            return (0..<d).reduce(0.0) { $0 + qh[$1] * Double(key[p * width + kv * d + $1]) } * Double(shape.scale)
                        }
                        let m = scores.max()!, weights = scores.map { exp($0 - m) }, total = weights.reduce(0, +)
                        for i in 0..<d {
                            let expected = zip(first...query.position, weights).reduce(0.0) { $0 + $1.1 * Double(decodedValues[s][$1.0 * width + kv * d + i]) } / total
                            XCTAssertEqual(Double(out[base + i]), expected, accuracy: 2e-5, "\(level) \(type) d \(d) query \(query) head \(h) dimension \(i)")
                        }
                    }
                    let alone = attend(Array(q[(query.row * heads * d)..<((query.row + 1) * heads * d)]), [(0, query.sequence, query.position)])
                    XCTAssertEqual(alone, Array(out[(query.row * heads * d)..<((query.row + 1) * heads * d)]), "\(level) \(type) d \(d) \(query) alone")
                }
            }
        }
        }
    }
}
