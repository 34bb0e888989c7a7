import GGUF
import Kernels
@testable import Models
import TestSupport
import XCTest

/// The cost model against FLOPs and bytes worked out by hand for the synthetic models
/// (width 64, 4 heads of 16, 2 KV heads, feed-forward 256, 3 layers, 259 tokens), the
/// roofline's arithmetic on a made-up machine, and the per-operation profile's counts.
final class CostModelTests: XCTestCase {
    func costs(_ architecture: String, _ step: StepShape) throws -> [OperationCost] {
        try ModelRegistry.load(SyntheticModel.file(architecture), options: ModelOptions(threads: 1)).stepCosts(step)
    }

    func total(_ costs: [OperationCost], _ op: StepOperation) -> (flops: Double, bytes: Double) {
        costs.filter { $0.operation == op }.reduce((0, 0)) { ($0.0 + $1.flops, $0.1 + $1.bytes) }
    }

    func testFlopsAndBytesMatchTheHandCount() throws {
        // Two sequences, each adding a token at 10 positions; Qwen2 has Q/K/V biases.
        let c = try costs("qwen2", StepShape(sequences: 2, context: 10))
        // Q (64×64, Q5_0: 2 blocks of 22 bytes a row), K (32×64, Q4_0: 2×18), V (32×64, Q8_0: 2×34):
        // 2·t·(4096 + 2048 + 2048) flops; weights 2816 + 1152 + 2176 bytes, and each matrix
        // reads its 2 input rows and writes its 2 output rows in fp32.
        XCTAssertEqual(total(c, .qkvProjection).flops, 3 * 2 * 2 * 8192)
        let qkvBytes: Double = 3 * (2816 + 1152 + 2176 + (512 + 512) + (512 + 256) + (512 + 256))
        XCTAssertEqual(total(c, .qkvProjection).bytes, qkvBytes)
        // Attention: 2 tokens × 4 heads × 10 positions × (4·16 + 5); fp16 K and V of 32 values
        // at 10 positions per token, queries read and written.
        XCTAssertEqual(total(c, .attention).flops, 3 * 2 * 4 * 10 * 69)
        XCTAssertEqual(total(c, .attention).bytes, 3 * (2 * 10 * 32 * 4 + 2 * 64 * 8))
        // Biases of 64 + 32 + 32 values on 2 tokens, each value read, added, written; the bias read once.
        XCTAssertEqual(total(c, .qkAdjust).flops, 3 * (128 + 64 + 64))
        let adjustBytes: Double = 3 * ((2 * 64 * 8 + 256) + 2 * (2 * 32 * 8 + 128))
        XCTAssertEqual(total(c, .qkAdjust).bytes, adjustBytes)
        // The output head is the tied Q8_0 embedding (259 rows of 68 bytes), one row per sequence.
        XCTAssertEqual(total(c, .outputHead).flops, 2 * 2 * 259 * 64)
        let headBytes: Double = 259 * 68 + 2 * 64 * 4 + 2 * 259 * 4
        XCTAssertEqual(total(c, .outputHead).bytes, headBytes)
        // Norms: 2 per layer and the final one, over 2 rows of 64.
        XCTAssertEqual(total(c, .norm).flops, 7 * 2 * 64 * 4)
        // The embedding reads one Q8_0 row per token and writes it as fp32.
        XCTAssertEqual(total(c, .embedding).bytes, 2 * (68 + 64 * 4))
        // Feed-forward down is Q4_K and Q6_K in turn: 256-wide rows of 144 and 210 bytes.
        let downWeights: Double = 2 * (64 * 144) + 64 * 210, downActivations: Double = 3 * (2 * 256 * 4 + 2 * 64 * 4 * 2)
        XCTAssertEqual(total(c, .feedForwardDown).bytes, downWeights + downActivations)
        XCTAssertNil(c.first { $0.operation == .residual }, "Llama's blocks add into the stream inside their projections")
    }

    func testGemmaLocalLayersAttendWithinTheirWindow() throws {
        // Layers 0 and 2 are local (a window of 8), layer 1 global: 8 + 10 + 8 positions.
        let c = try costs("gemma3", StepShape(sequences: 1, context: 10))
        let flops: Double = 4 * 26 * 69
        XCTAssertEqual(total(c, .attention).flops, flops)
        XCTAssertEqual(c.filter { $0.operation == .residual }.count, 6, "two residual additions per block")
        XCTAssertEqual(c.filter { $0.operation == .norm }.count, 13, "four norms per block and the final one")
    }

    func testRooflineTakesTheLargerOfMemoryAndCompute() throws {
        let c = try costs("qwen2", StepShape(sequences: 2, context: 10))
        let machine = HardwareProfile(name: "test", threads: 1, measured: true, bandwidthGBs: 10, vectorGFLOPs: 100, matrixGOPs: ["*": 50])
        let rows = Roofline.rows(c, on: machine)
        let attention = try XCTUnwrap(rows.first { $0.operation == .attention })
        XCTAssertEqual(attention.bound, .memory)
        let attentionBytes: Double = 3 * (2 * 10 * 32 * 4 + 2 * 64 * 8), attentionFlops: Double = 3 * 2 * 4 * 10 * 69
        XCTAssertEqual(attention.predictedSeconds, attentionBytes / 10e9, accuracy: 1e-15)
        XCTAssertEqual(attention.intensity, attentionFlops / attentionBytes, accuracy: 1e-12)
        // A machine whose arithmetic is 1000 times slower is compute-bound in the head.
        let slow = HardwareProfile(name: "slow", threads: 1, measured: true, bandwidthGBs: 10, vectorGFLOPs: 0.1, matrixGOPs: ["*": 0.05])
        let head = try XCTUnwrap(Roofline.rows(c, on: slow).first { $0.operation == .outputHead })
        XCTAssertEqual(head.bound, .compute)
        let headFlops: Double = 2 * 2 * 259 * 64
        XCTAssertEqual(head.predictedSeconds, headFlops / 0.05e9, accuracy: 1e-12)
        XCTAssertEqual(Roofline.stepSeconds(c, on: machine), rows.reduce(0) { $0 + $1.predictedSeconds }, accuracy: 1e-15)
        // Roofs are looked up by format, shape and batch width; a missing one is named.
        let headRoof = MatrixRoof(format: .q8_0, rows: 259, cols: 64)
        XCTAssertEqual(headRoof.key(tokens: 2), "Q8_0 259×64@2")
        let perShape = HardwareProfile(name: "p", threads: 1, measured: true, bandwidthGBs: 10, vectorGFLOPs: 100, matrixGOPs: [headRoof.key(tokens: 2): 1])
        let missing = Roofline.missingRoofs(c, on: perShape)
        XCTAssertTrue(missing.contains { $0.roof.format == .q5_0 && $0.tokens == 2 })
        XCTAssertTrue(missing.contains { $0.roof == MatrixRoof(format: .q8_0, rows: 32, cols: 64) }, "V: the same format, another shape")
        XCTAssertFalse(missing.contains { $0.roof == headRoof })
        // Infinitely fast arithmetic: every width up to the limit stays memory-bound; arithmetic
        // far slower than memory: only one token.
        let model = try ModelRegistry.load(SyntheticModel.file("qwen2"), options: ModelOptions(threads: 1))
        XCTAssertEqual(Roofline.memoryBoundTokens(model, context: 10, on: HardwareProfile(name: "f", threads: 1, measured: true, bandwidthGBs: 10,
                                                                                           vectorGFLOPs: 1e9, matrixGOPs: ["*": 1e9]), upTo: 32), 32)
        XCTAssertEqual(Roofline.memoryBoundTokens(model, context: 10, on: slow, upTo: 32), 1)
    }

    /// Attention's arithmetic has a roof of its own, per head shape, cache type and batch
    /// width: time per (query head, position) with the threads working as a step splits
    /// them; a profile without one (a datasheet's) takes the vector roof, and a measured one
    /// names what it lacks.
    func testAttentionTakesItsOwnRoof() throws {
        let c = try costs("qwen2", StepShape(sequences: 2, context: 10))
        let roof = AttentionRoof(headDim: 16, heads: 4, kvHeads: 2, kv: .f16)
        XCTAssertEqual(roof.key(tokens: 2), "d16 4/2 heads f16@2")
        let machine = HardwareProfile(name: "test", threads: 2, measured: true, bandwidthGBs: 10, vectorGFLOPs: 100, matrixGOPs: ["*": 50],
                                      attentionNanoseconds: [roof.key(tokens: 2): 1000])
        let attention = try XCTUnwrap(Roofline.rows(c, on: machine).first { $0.operation == .attention })
        // 3 layers × 2 tokens × 4 heads × 10 positions at 1 µs each.
        XCTAssertEqual(attention.computeSeconds, 3 * 2 * 4 * 10 * 1e-6, accuracy: 1e-12)
        XCTAssertEqual(attention.bound, .compute)
        let withoutRoof = HardwareProfile(name: "test", threads: 2, measured: true, bandwidthGBs: 10, vectorGFLOPs: 100, matrixGOPs: ["*": 50])
        let vector = try XCTUnwrap(Roofline.rows(c, on: withoutRoof).first { $0.operation == .attention })
        XCTAssertEqual(vector.computeSeconds, 3 * 2 * 4 * 10 * 69 / 100e9, accuracy: 1e-15)
        XCTAssertEqual(Roofline.missingAttentionRoofs(c, on: withoutRoof).map { $0.roof.key(tokens: $0.tokens) }, [roof.key(tokens: 2)])
        XCTAssertEqual(Roofline.missingAttentionRoofs(c, on: machine).count, 0)
        XCTAssertEqual(Roofline.missingAttentionRoofs(c, on: HardwareProfile.datasheets["h100"]!).count, 0, "a datasheet is not probed")
    }

    func testTheProfileTimesEachOperationOfAStep() throws {
        let model = try ModelRegistry.load(SyntheticModel.file("qwen2"), options: ModelOptions(threads: 1))
        let cache = model.makeCache(capacity: 16)
        _ = try model.forward([1, 5, 7], cache: cache, logitRows: 2..<3)
        XCTAssertTrue(model.profile.snapshot().seconds.isEmpty, "off by default")
        model.profile.isEnabled = true
        defer { model.profile.isEnabled = false }
        _ = try model.forward([9], cache: cache, logitRows: 0..<1)
        let s = model.profile.snapshot()
        XCTAssertEqual(s.steps, 1)
        XCTAssertEqual(s.calls[.norm], 7)
        XCTAssertEqual(s.calls[.qkvProjection], 3)
        XCTAssertEqual(s.calls[.qkAdjust], 3)
        XCTAssertEqual(s.calls[.attention], 3)
        XCTAssertEqual(s.calls[.outputHead], 1)
        XCTAssertEqual(s.calls[.embedding], 1)
        XCTAssertNil(s.calls[.residual])
        XCTAssertTrue(s.seconds.values.allSatisfy { $0 > 0 })
        model.profile.reset()
        XCTAssertEqual(model.profile.snapshot().steps, 0)
    }
}
