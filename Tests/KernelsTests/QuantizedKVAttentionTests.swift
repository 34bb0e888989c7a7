import Foundation
import XCTest

@testable import Kernels

/// Attention over Q8_0 and Q4_0 keys and values, alike or mixed with each other or with f16:
/// against a double-precision reference that decodes the same blocks (only the kernel's f32
/// sums differ), on every instruction-set level, and the same result for a query alone and
/// in a ragged batch.
final class QuantizedKVAttentionTests: XCTestCase {
    struct Fixture {
        let type: KVCacheType
        let shape: Attention.Shape
        let blockSize: Int
        let keyRowBytes: Int
        let valueRowBytes: Int
        var keys: [UInt8]
        var values: [UInt8]
        /// The decoded keys and values of each sequence, position by position.
        var decodedKeys: [[Float]] = []
        var decodedValues: [[Float]] = []
        var tables: [[Int32]] = []

        init(type: KVCacheType, shape: Attention.Shape, lengths: [Int], blockSize: Int, seed: UInt64) {
            self.type = type
            self.shape = shape
            self.blockSize = blockSize
            let width = shape.kvStride
            keyRowBytes = type.keys.rowBytes(width)
            valueRowBytes = type.values.rowBytes(width)
            let counts = lengths.map { ($0 + blockSize - 1) / blockSize }
            var g = SplitMix(seed)
            var order = Array(0..<counts.reduce(0, +)).map(Int32.init)
            order.shuffle(using: &g)
            keys = [UInt8](repeating: 0xFF, count: order.count * blockSize * keyRowBytes)
            values = [UInt8](repeating: 0xFF, count: order.count * blockSize * valueRowBytes)
            var next = 0
            for (s, n) in counts.enumerated() {
                let table = Array(order[next..<(next + n)])
                next += n
                tables.append(table)
                var dk: [Float] = [], dv: [Float] = []
                for p in 0..<lengths[s] {
                    let k = (0..<width).map { _ in Float.random(in: -2...2, using: &g) }
                    let v = (0..<width).map { _ in Float.random(in: -1...1, using: &g) }
                    let kq = Quantization.quantize(k, format: type.keys.tensorFormat), vq = Quantization.quantize(v, format: type.values.tensorFormat)
                    let row = Int(table[p / blockSize]) * blockSize + p % blockSize
                    keys.replaceSubrange((row * keyRowBytes)..<((row + 1) * keyRowBytes), with: kq)
                    values.replaceSubrange((row * valueRowBytes)..<((row + 1) * valueRowBytes), with: vq)
                    dk += Quantization.dequantize(kq, count: width, format: type.keys.tensorFormat)
                    dv += Quantization.dequantize(vq, count: width, format: type.values.tensorFormat)
                }
                decodedKeys.append(dk)
                decodedValues.append(dv)
            }
        }

        func attend(_ q: [Float], _ queries: [(row: Int, sequence: Int, position: Int)], threads: Int) -> [Float] {
            var out = [Float](repeating: 0, count: q.count)
            let tables = self.tables.map { table in
                let p = UnsafeMutablePointer<Int32>.allocate(capacity: table.count)
                p.initialize(from: table, count: table.count)
                return p
            }
            defer { tables.forEach { $0.deallocate() } }
            keys.withUnsafeBytes { k in
                values.withUnsafeBytes { v in
                    let batch = queries.map { Attention.Query(row: $0.row, position: $0.position, blockTable: tables[$0.sequence]) }
                    let layer = Attention.PagedLayer(keys: k.baseAddress!, values: v.baseAddress!, blockSize: blockSize, type: type, keyRowBytes: keyRowBytes,
                                                       valueRowBytes: valueRowBytes)
                    batch.withUnsafeBufferPointer { b in
                        Attention.causal(queries: q, batch: b, cache: layer, shape: shape, into: &out, pool: ThreadPool(threads: threads))
                    }
                }
            }
            return out
        }

        /// One query head over `0...position` of sequence `s`, in doubles, its query rounded
        /// to f16 (as for every cache type), the keys and values decoded from their blocks.
        func reference(_ q: ArraySlice<Float>, sequence s: Int, position: Int, head h: Int) -> [Double] {
            let d = shape.headDim, kv = h / (shape.heads / shape.kvHeads), width = shape.kvStride
            let query = q.map { Double(Float(Float16($0))) }
            let first = shape.window.map { max(0, position + 1 - $0) } ?? 0
            let scores = (first...position).map { p in
                (0..<d).reduce(0.0) { $0 + query[$1] * Double(decodedKeys[s][p * width + kv * d + $1]) } * Double(shape.scale)
            }
            let m = scores.max()!
            let weights = scores.map { exp($0 - m) }, total = weights.reduce(0, +)
            return (0..<d).map { i in
                zip(first...position, weights).reduce(0.0) { $0 + $1.1 * Double(decodedValues[s][$1.0 * width + kv * d + i]) } / total
            }
        }
    }

    func testQuantizedCachesAgainstTheReferenceOnEveryLevel() {
        defer { IntegerKernels.limit(to: .avx512vnni) }
        for level in IntegerKernels.Level.allCases where level <= IntegerKernels.available {
            IntegerKernels.limit(to: level)
            let types = [KVCacheType(.q8_0), KVCacheType(.q4_0), KVCacheType(keys: .q8_0, values: .q4_0),
                         KVCacheType(keys: .f16, values: .q4_0), KVCacheType(keys: .q4_0, values: .f16)]
            for format in types {
                for (d, heads, kvHeads, window) in [(64, 6, 2, nil), (32, 4, 4, nil), (256, 4, 1, 100 as Int?)] {
                    let shape = Attention.Shape(heads: heads, kvHeads: kvHeads, headDim: d, window: window)
                    // 700 positions: past one 512-position chunk, so a lone query splits over the threads.
                    let fixture = Fixture(type: format, shape: shape, lengths: [37, 700], blockSize: 7, seed: UInt64(d + heads))
                    var g = SplitMix(99)
                    let queries: [(row: Int, sequence: Int, position: Int)] = [(0, 0, 36), (1, 1, 699), (2, 1, 5), (3, 0, 0)]
                    let q = (0..<(queries.count * heads * d)).map { _ in Float.random(in: -1...1, using: &g) }
                    let out = fixture.attend(q, queries, threads: 2)
                    for query in queries {
                        for h in 0..<heads {
                            let base = query.row * heads * d + h * d
                            let expected = fixture.reference(q[base..<(base + d)], sequence: query.sequence, position: query.position, head: h)
                            for i in 0..<d {
                                XCTAssertEqual(Double(out[base + i]), expected[i], accuracy: 2e-5,
                                               "\(level) \(format) d \(d) query \(query) head \(h) dimension \(i)")
                            }
                        }
                        // Alone, the query gets bitwise what it got in the batch.
                        let alone = fixture.attend(Array(q[(query.row * heads * d)..<((query.row + 1) * heads * d)]), [(0, query.sequence, query.position)], threads: 2)
                        XCTAssertEqual(alone, Array(out[(query.row * heads * d)..<((query.row + 1) * heads * d)]), "\(level) \(format) d \(d) \(query) alone")
                    }
                }
            }
        }
    }
}
