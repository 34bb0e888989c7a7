import Foundation
import TestSupport
import XCTest

@testable import Kernels

/// Attention over Q8_0 and Q4_0 keys and values, alike or mixed with each other or with f16,
/// and over kivi4 keys: against a double-precision reference that decodes the same blocks
/// (only the kernel's f32 sums differ), on every instruction-set level, and the same result
/// for a query alone and in a ragged batch. kivi4 blocks are all both sealed and staged, as
/// a block the writer has just filled is, and so are Q4_0 keys where the cache stages them;
/// the reference takes a query's own block from the staged f16 keys and every other block
/// decoded.
final class QuantizedKVAttentionTests: XCTestCase {
    struct Fixture {
        let type: KVCacheType
        let stagesKeys: Bool
        let shape: Attention.Shape
        let blockSize: Int
        let keyRowBytes: Int
        let valueRowBytes: Int
        var keys: [UInt8]
        var values: [UInt8]
        /// The decoded keys and values of each sequence, position by position (kivi4: its
        /// blocks' sealed keys, and `stagedKeys` their f16 ones).
        var decodedKeys: [[Float]] = []
        var stagedKeys: [[Float]] = []
        /// With staged keys: per block of the pool, its staged f16 keys.
        var stagedBlocks: [[Float16]] = []
        var decodedValues: [[Float]] = []
        var tables: [[Int32]] = []

        init(type: KVCacheType, stagesKeys: Bool, shape: Attention.Shape, lengths: [Int], blockSize: Int, seed: UInt64) {
            self.type = type
            self.stagesKeys = stagesKeys
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
            stagedBlocks = [[Float16]](repeating: [], count: stagesKeys ? order.count : 0)
            var next = 0
            for (s, n) in counts.enumerated() {
                let table = Array(order[next..<(next + n)])
                next += n
                tables.append(table)
                // Keys with a few large, steady channels, as real keys have.
                let k = (0..<(n * blockSize * width)).map { i in (i % width % 9 == 0 ? 20 : 0) + Float.random(in: -2...2, using: &g) }
                var dk: [Float] = [], dv: [Float] = []
                for p in 0..<lengths[s] {
                    let v = (0..<width).map { _ in Float.random(in: -1...1, using: &g) }
                    let vq = Quantization.quantize(v, format: type.values.tensorFormat)
                    let row = Int(table[p / blockSize]) * blockSize + p % blockSize
                    values.replaceSubrange((row * valueRowBytes)..<((row + 1) * valueRowBytes), with: vq)
                    dv += Quantization.dequantize(vq, count: width, format: type.values.tensorFormat)
                    guard !type.keys.isPerChannel else { continue }
                    let kq = Quantization.quantize(Array(k[(p * width)..<((p + 1) * width)]), format: type.keys.tensorFormat)
                    keys.replaceSubrange((row * keyRowBytes)..<((row + 1) * keyRowBytes), with: kq)
                    dk += Quantization.dequantize(kq, count: width, format: type.keys.tensorFormat)
                }
                if type.keys.isPerChannel {
                    dk = [Float](repeating: 0, count: k.count)
                    for (j, b) in table.enumerated() {
                        let block = Int(b), staged = k[(j * blockSize * width)..<((j + 1) * blockSize * width)].map { Float16($0) }
                        stagedBlocks[block] = staged
                        keys.withUnsafeMutableBytes { out in
                            staged.withUnsafeBufferPointer { ChannelKeys.quantize($0.baseAddress!, width: width, into: out.baseAddress! + block * blockSize * keyRowBytes) }
                        }
                        keys.withUnsafeBytes { sealed in
                            dk.withUnsafeMutableBufferPointer {
                                ChannelKeys.dequantize(sealed.baseAddress! + block * blockSize * keyRowBytes, width: width, channels: 0..<width,
                                                       positions: 0..<blockSize, into: $0.baseAddress! + j * blockSize * width, stride: width)
                            }
                        }
                    }
                } else if stagesKeys {
                    for (j, b) in table.enumerated() { stagedBlocks[Int(b)] = k[(j * blockSize * width)..<((j + 1) * blockSize * width)].map { Float16($0) } }
                }
                if stagesKeys { stagedKeys.append(k.map { Float(Float16($0)) }) }
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
            let staged = UnsafeMutablePointer<UnsafeMutablePointer<Float16>?>.allocate(capacity: max(1, stagedBlocks.count))
            for (b, block) in stagedBlocks.enumerated() {
                staged[b] = .allocate(capacity: block.count)
                staged[b]!.initialize(from: block, count: block.count)
            }
            defer {
                for b in stagedBlocks.indices { staged[b]!.deallocate() }
                staged.deallocate()
            }
            keys.withUnsafeBytes { k in
                values.withUnsafeBytes { v in
                    let batch = queries.map { Attention.Query(row: $0.row, position: $0.position, blockTable: tables[$0.sequence]) }
                    let layer = Attention.PagedLayer(keys: k.baseAddress!, values: v.baseAddress!, blockSize: blockSize, type: type, keyRowBytes: keyRowBytes,
                                                       valueRowBytes: valueRowBytes,
                                                       stagedKeys: stagesKeys ? Attention.StagedKeys(blocks: UnsafePointer(staged), offset: 0) : nil)
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
                let keys = stagesKeys && p / blockSize == position / blockSize ? stagedKeys[s] : decodedKeys[s]
                return (0..<d).reduce(0.0) { $0 + query[$1] * Double(keys[p * width + kv * d + $1]) } * Double(shape.scale)
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
            // Q4_0 keys with their own block staged (as a cache keeps them) and without (a draft model's cache).
            let types = [(KVCacheType(.q8_0), false), (KVCacheType(.q4_0), true), (KVCacheType(.q4_0), false), (KVCacheType(keys: .q8_0, values: .q4_0), false),
                         (KVCacheType(keys: .f16, values: .q4_0), false), (KVCacheType(keys: .q4_0, values: .f16), true),
                         (KVCacheType(keys: .kivi4, values: .q4_0), true), (KVCacheType(keys: .kivi4, values: .f16), true)]
            for (format, stages) in types {
                for (d, heads, kvHeads, window) in [(64, 6, 2, nil), (32, 4, 4, nil), (256, 4, 1, 100 as Int?)] {
                    let shape = Attention.Shape(heads: heads, kvHeads: kvHeads, headDim: d, window: window)
                    // 700 positions: past one 512-position chunk, so a lone query splits over the threads.
                    // kivi4 keys come in blocks of 16 positions; the rest in blocks that split no head.
                    let fixture = Fixture(type: format, stagesKeys: stages, shape: shape, lengths: [37, 700], blockSize: format.keys.isPerChannel ? 16 : 7,
                                          seed: UInt64(d + heads))
                    var g = SplitMix(99)
                    let queries: [(row: Int, sequence: Int, position: Int)] = [(0, 0, 36), (1, 1, 699), (2, 1, 5), (3, 0, 0), (4, 0, 15), (5, 1, 16)]
                    let q = (0..<(queries.count * heads * d)).map { _ in Float.random(in: -1...1, using: &g) }
                    let out = fixture.attend(q, queries, threads: 2)
                    for query in queries {
                        for h in 0..<heads {
                            let base = query.row * heads * d + h * d
                            let expected = fixture.reference(q[base..<(base + d)], sequence: query.sequence, position: query.position, head: h)
                            for i in 0..<d {
                                XCTAssertEqual(Double(out[base + i]), expected[i], accuracy: 2e-5,
                                               "\(level) \(format) staged \(stages) d \(d) query \(query) head \(h) dimension \(i)")
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
