/// Activation rows converted into the partner format of a weight type, laid out for the
/// matrix kernels.
///
/// Each 32-value block of each row becomes 34 numbers: the 32 integer-valued (or plain)
/// `q_j`, the scale `d` and the block sum `s`, so that a block's contribution to a dot
/// product is `d_w * d_a * Σ q_w q_a + m_w * s_a` for every format. Rows are grouped in
/// tiles of `lanes` tokens, with the tokens of a tile interleaved so a kernel can update
/// all of them with one vector operation per weight.
///
/// Quantization follows llama.cpp's x86 path (`../shared/formats.md`): `d = amax / 127`
/// stored as f16, multiplier `127 / amax`, round half to even, and for Q8_1
/// `s = f16(d · Σq)` with the unrounded `d`.
import KernelsC

public struct PreparedActivations {
    public static let stride = 34
    public private(set) var storage: UnsafeMutablePointer<Float>
    private var capacity: Int
    public private(set) var rows = 0
    public private(set) var blocks = 0
    public private(set) var lanes = 1

    private var blocks8: UnsafeMutablePointer<apus_q8_block>
    private var blocks8Capacity = 0

    private var tile16: UnsafeMutablePointer<apus_tile16_block>?
    private var tilesCapacity = 0

    private var blocks8K: UnsafeMutablePointer<apus_q8k_block>?
    private var blocks8KCapacity = 0

    private var tile16K: UnsafeMutablePointer<apus_tile16k_block>?
    private var tiles16KCapacity = 0

    /// Room for `count` transposed sixteen-token Q8_K blocks for the AVX-512 VNNI kernel.
    mutating func superBlockTiles(count: Int) -> UnsafeMutablePointer<apus_tile16k_block> {
        if count > tiles16KCapacity {
            tile16K?.deallocate()
            tile16K = UnsafeMutablePointer<apus_tile16k_block>.allocate(capacity: count)
            tiles16KCapacity = count
        }
        return tile16K!
    }

    /// Room for `count` Q8_K activation blocks for the super-block kernels.
    mutating func superBlocks(count: Int) -> UnsafeMutablePointer<apus_q8k_block> {
        if count > blocks8KCapacity {
            blocks8K?.deallocate()
            blocks8K = UnsafeMutablePointer<apus_q8k_block>.allocate(capacity: count)
            blocks8KCapacity = count
        }
        return blocks8K!
    }

    /// Room for `count` transposed sixteen-token blocks for the AVX-512 VNNI kernel.
    mutating func tileBlocks(count: Int) -> UnsafeMutablePointer<apus_tile16_block> {
        if count > tilesCapacity {
            tile16?.deallocate()
            tile16 = UnsafeMutablePointer<apus_tile16_block>.allocate(capacity: count)
            tilesCapacity = count
        }
        return tile16!
    }

    /// What the buffer currently holds, so a caller may reuse it for the same input.
    struct Key: Equatable {
        let input: UnsafePointer<Float>
        let rows: Int
        let count: Int
        let format: ActivationFormat?
        let precision: ActivationPrecision
        let lanes: Int
    }
    var key: Key?

    public init() {
        capacity = 0
        storage = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        blocks8 = UnsafeMutablePointer<apus_q8_block>.allocate(capacity: 1)
    }

    public func release() {
        storage.deallocate()
        blocks8.deallocate()
        tile16?.deallocate()
        blocks8K?.deallocate()
        tile16K?.deallocate()
    }

    /// Room for `count` 8-bit activation blocks for the C kernels.
    mutating func quantizedBlocks(count: Int) -> UnsafeMutablePointer<apus_q8_block> {
        if count > blocks8Capacity {
            blocks8.deallocate()
            blocks8 = UnsafeMutablePointer<apus_q8_block>.allocate(capacity: count)
            blocks8Capacity = count
        }
        return blocks8
    }

    public var tiles: Int { (rows + lanes - 1) / lanes }

    /// Start of block `block` of tile `tile`: 34 groups of `lanes` floats.
    @inline(__always) public func block(tile: Int, block: Int) -> UnsafeMutablePointer<Float> {
        storage + (tile * blocks + block) * Self.stride * lanes
    }

    /// Fills the buffer from `rows` rows of `count` values each (row stride `count`).
    public mutating func prepare(_ x: UnsafePointer<Float>, rows: Int, count: Int, format: ActivationFormat,
                                 precision: ActivationPrecision, lanes: Int) {
        self.rows = rows
        self.blocks = (count + 31) / 32
        self.lanes = lanes
        let needed = tiles * blocks * Self.stride * lanes
        if needed > capacity {
            storage.deallocate()
            storage = UnsafeMutablePointer<Float>.allocate(capacity: needed)
            capacity = needed
        }
        storage.initialize(repeating: 0, count: needed)
        var values = [Float](repeating: 0, count: 32)
        for row in 0..<rows {
            let tile = row / lanes, lane = row % lanes
            for b in 0..<blocks {
                let n = min(32, count - 32 * b)
                for j in 0..<32 { values[j] = j < n ? x[row * count + 32 * b + j] : 0 }
                let out = block(tile: tile, block: b)
                let (d, s) = Self.convert(&values, format: format, precision: precision)
                for j in 0..<32 { out[j * lanes + lane] = values[j] }
                out[32 * lanes + lane] = d
                out[33 * lanes + lane] = s
            }
        }
    }

    /// Converts one block in place into its `q` values and returns `(d, s)`.
    @inline(__always) static func convert(_ v: inout [Float], format: ActivationFormat, precision: ActivationPrecision) -> (Float, Float) {
        if precision == .fp32 {
            var sum: Float = 0
            for j in 0..<32 { sum += v[j] }
            return (1, sum)
        }
        switch format {
        case .q8_K:
            preconditionFailure("Q8_K activations are prepared by SuperBlockKernels")
        case .q8_0, .q8_1:
            var amax: Float = 0
            for j in 0..<32 { amax = max(amax, abs(v[j])) }
            let d = amax / 127
            let id: Float = amax != 0 ? 127 / amax : 0
            var qsum: Float = 0
            for j in 0..<32 {
                v[j] = (v[j] * id).rounded(.toNearestOrEven)
                qsum += v[j]
            }
            let s: Float = format == .q8_1 ? HalfPrecision.roundToF16(d * qsum) : 0
            return (HalfPrecision.roundToF16(d), s)
        case .f16:
            for j in 0..<32 { v[j] = HalfPrecision.roundToF16(v[j]) }
            return (1, 0)
        case .bf16:
            for j in 0..<32 { v[j] = HalfPrecision.bf16ToFloat(HalfPrecision.floatToBF16(v[j])) }
            return (1, 0)
        case .f32:
            return (1, 0)
        }
    }
}
