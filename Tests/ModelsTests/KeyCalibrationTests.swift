import Foundation
import GGUF
import Kernels
@testable import Models
import TestSupport
import XCTest

/// The key transforms a quantized cache fits at load (`KeyTransform`): they change no
/// attention weight, they are the statistics they are said to be, and a model fits the same
/// ones every time it loads.
final class KeyCalibrationTests: XCTestCase {
    /// Every score of a query drops by the same `q · shift` (softmax cancels it), with the
    /// scale and its signs changing nothing.
    func testTransformedScoresDifferByOneConstantPerQuery() {
        var g = SplitMix(3)
        let heads = 4, kvHeads = 2, headDim = 32, width = kvHeads * headDim
        let shift = (0..<width).map { _ in Float.random(in: -50...50, using: &g) }
        let scale = (0..<width).map { i in KeyStatistics.sign(channel: i) * Float.random(in: 0.2...5, using: &g) }
        let transform = KeyTransform(shift: shift, scale: scale)
        var query = (0..<(heads * headDim)).map { _ in Float.random(in: -2...2, using: &g) }
        let keys = (0..<7).map { _ in (0..<width).map { _ in Float.random(in: -60...60, using: &g) } }
        func scores(_ q: [Float], _ ks: [[Float]]) -> [[Double]] {
            (0..<heads).map { h in
                let kv = h / (heads / kvHeads)
                return ks.map { k in (0..<headDim).reduce(0.0) { $0 + Double(q[h * headDim + $1]) * Double(k[kv * headDim + $1]) } }
            }
        }
        let plain = scores(query, keys)
        let transformedKeys = keys.map { k -> [Float] in
            var k = k
            k.withUnsafeMutableBufferPointer { transform.apply(key: $0.baseAddress!) }
            return k
        }
        let original = query
        query.withUnsafeMutableBufferPointer { transform.apply(query: $0.baseAddress!, heads: heads, headDim: headDim) }
        let transformed = scores(query, transformedKeys)
        for h in 0..<heads {
            let kv = h / (heads / kvHeads)
            let drop = (0..<headDim).reduce(0.0) { $0 + Double(original[h * headDim + $1]) * Double(shift[kv * headDim + $1]) }
            for j in keys.indices {
                XCTAssertEqual(plain[h][j] - transformed[h][j], drop, accuracy: 1e-3 * max(1, abs(drop)), "head \(h), key \(j)")
            }
        }
    }

    /// The shift is each channel's mean key, the scale `(var k / E q²)^¼` with the channel's
    /// sign, the queries of a KV head's group averaged, and a channel that never varies held
    /// at the floor.
    func testStatisticsGiveMeansAndBalancedScales() throws {
        var s = SyntheticModel.Shape()
        s.layers = 1
        s.heads = 2
        s.kvHeads = 1
        s.headDim = 32
        let shape = try TransformerShape(metadata: SyntheticModel.file("llama", shape: s).metadata, prefix: "llama")
        let statistics = KeyStatistics(shape: shape)
        // Two positions. Channel 0: keys 1 and 5 (mean 3, variance 4), queries of the two
        // heads 2, 6 and 2, 6 (E q² = 20). Channel 1: keys 7 and 7. Other channels: keys ±1
        // and queries 1.
        for position in 0..<2 {
            var keys = [Float16](repeating: position == 0 ? 1 : -1, count: 32)
            keys[0] = position == 0 ? 1 : 5
            keys[1] = 7
            var queries = [Float](repeating: 1, count: 64)
            (queries[0], queries[32]) = (2, 6)
            keys.withUnsafeBufferPointer { k in queries.withUnsafeBufferPointer { statistics.add(layer: 0, keys: k.baseAddress!, queries: $0.baseAddress!) } }
        }
        let transform = try XCTUnwrap(statistics.transforms().first)
        XCTAssertEqual(transform.shift[0], 3)
        XCTAssertEqual(transform.shift[1], 7)
        XCTAssertEqual(transform.shift[2], 0)
        XCTAssertEqual(abs(transform.scale[0]), Float((4.0 / 20).squareRoot().squareRoot()), accuracy: 1e-6)
        XCTAssertEqual(abs(transform.scale[2]), 1, accuracy: 1e-6)
        // Channel 1's variance (0) is floored at 1e-4 of the mean variance (4 + 30 · 1) / 32.
        XCTAssertEqual(abs(transform.scale[1]), Float((1e-4 * 34 / 32).squareRoot().squareRoot()), accuracy: 1e-6)
        for i in 0..<32 { XCTAssertEqual(transform.scale[i].sign == .minus, KeyStatistics.sign(channel: i) < 0) }
        XCTAssertEqual(Set((0..<32).map { KeyStatistics.sign(channel: $0) }), [-1, 1])
    }

    /// A quantized cache fits its transforms at load, the same ones on every load, and they
    /// name what its keys mean (`keyTransformDigest`); an f16 cache has none, and another
    /// model's are others.
    func testAQuantizedCacheFitsTheSameTransformsOnEveryLoad() throws {
        var shape = SyntheticModel.Shape()
        shape.headDim = 32
        let file = try SyntheticModel.file("qwen2", shape: shape)
        let first = try ModelRegistry.load(file, options: ModelOptions(threads: 2, kvType: KVCacheType(.q4_0))).kvShape.keyTransformDigest
        XCTAssertNotEqual(first, 0)
        XCTAssertEqual(try ModelRegistry.load(file, options: ModelOptions(threads: 1, kvType: KVCacheType(.q4_0))).kvShape.keyTransformDigest, first,
                       "the same on one thread as on two")
        XCTAssertEqual(try ModelRegistry.load(file, options: ModelOptions(threads: 2, kvType: KVCacheType(keys: .q4_0, values: .f16))).kvShape.keyTransformDigest,
                       first, "fitted on an f16 cache, whatever the values' format")
        XCTAssertEqual(try ModelRegistry.load(file, options: ModelOptions(threads: 2)).kvShape.keyTransformDigest, 0)
        XCTAssertEqual(try ModelRegistry.load(file, options: ModelOptions(threads: 2, kvType: KVCacheType(keys: .f16, values: .q4_0))).kvShape.keyTransformDigest, 0)
        let other = try SyntheticModel.file("qwen2", shape: shape, seed: 2)
        XCTAssertNotEqual(try ModelRegistry.load(other, options: ModelOptions(threads: 2, kvType: KVCacheType(.q4_0))).kvShape.keyTransformDigest, first)
    }
}
