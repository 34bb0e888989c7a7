/// A row-major weight matrix in one of the `TensorFormat`s, viewed in place (for a model,
/// inside the memory-mapped file). `rows` outputs, each a dot product over `cols` inputs.
public struct WeightMatrix: @unchecked Sendable {
    public let format: TensorFormat
    public let rows: Int
    public let cols: Int
    public let data: UnsafeRawPointer

    public init(format: TensorFormat, rows: Int, cols: Int, data: UnsafeRawPointer) {
        precondition(format.canStore(rowLength: cols), "row length \(cols) is not a whole number of \(format) blocks")
        self.format = format
        self.rows = rows
        self.cols = cols
        self.data = data
    }

    public var rowBytes: Int { format.rowBytes(cols) }
    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }
}

import KernelsC

/// Matrix products `y = x · Wᵀ` over quantized weights.
///
/// Each output element is `Σ_blocks (d_w · d_a · Σ q_w q_a + m_w · s_a)` with the blocks
/// summed in order and each inner sum taken weight by weight with fused multiply-adds, in
/// the single-token and the tiled kernel alike: a row's result is bitwise the same alone or
/// in any batch, on the int8 and the fp32 path.
public enum MatMul {
    /// Tokens per tile in the batched kernel (one 16-lane vector).
    public static let lanes = 16

    /// `y[t][r] = Σ_c x[t][c] · W[r][c]` for `tokens` rows of `x` (stride `w.cols`); `y` has
    /// stride `w.rows`.
    ///
    /// With `reusingActivations`, the caller promises that `x` has not changed since the
    /// previous call with this scratch (Q, K and V share their input, as do gate and up);
    /// the converted activations are then reused when they suit this matrix's format. With
    /// `accumulating`, the products are added to `y` (a residual connection) instead of
    /// replacing it.
    public static func multiply(_ w: WeightMatrix, _ x: UnsafePointer<Float>, tokens: Int, into y: UnsafeMutablePointer<Float>,
                                precision: ActivationPrecision, pool: ThreadPool, scratch: inout PreparedActivations,
                                reusingActivations: Bool = false, accumulating: Bool = false) {
        guard tokens > 0 else { return }
        if precision == .int8, w.format.activationPartner == .q8_K {
            SuperBlockKernels.multiply(CollectionOfOne((w, y)), x, tokens: tokens, pool: pool, scratch: &scratch, reusing: reusingActivations, accumulate: accumulating)
            return
        }
        if precision == .int8, w.format.cKernel != nil, IntegerKernels.level != .portable {
            IntegerKernels.multiply(CollectionOfOne((w, y)), x, tokens: tokens, pool: pool, scratch: &scratch, reusing: reusingActivations, accumulate: accumulating)
            return
        }
        let lanes = tokens == 1 ? 1 : Self.lanes
        let key = PreparedActivations.Key(input: x, rows: tokens, count: w.cols, format: w.format.activationPartner, precision: precision, lanes: lanes)
        if !(reusingActivations && scratch.key == key) {
            scratch.prepare(x, rows: tokens, count: w.cols, format: w.format.activationPartner, precision: precision, lanes: lanes)
            scratch.key = key
        }
        w.format.layout.multiplyRows(w, scratch, y, pool, accumulating)
    }

    static func run<L: WeightBlockLayout>(_ layout: L.Type, _ w: WeightMatrix, _ act: PreparedActivations,
                                          _ y: UnsafeMutablePointer<Float>, _ pool: ThreadPool, _ accumulate: Bool) {
        let out = UncheckedBox(y)
        pool.parallelFor(w.rows, minimumChunk: 16) { rows in
            if act.lanes == 1 {
                singleToken(layout, w, act, out.value, rows, accumulate)
            } else {
                tiled(layout, w, act, out.value, rows, accumulate)
            }
        }
    }

    /// Several products over the same input `x`, such as Q, K and V: on the int8 kernels one
    /// quantization and one pass of the thread pool for all of them; results are the same as
    /// separate calls.
    public static func multiply(_ products: [(WeightMatrix, UnsafeMutablePointer<Float>)], _ x: UnsafePointer<Float>, tokens: Int,
                                precision: ActivationPrecision, pool: ThreadPool, scratch: inout PreparedActivations) {
        guard tokens > 0, !products.isEmpty else { return }
        let sameWidth = products.allSatisfy { $0.0.cols == products[0].0.cols }
        if precision == .int8, sameWidth, products.allSatisfy({ $0.0.format.activationPartner == .q8_K }) {
            SuperBlockKernels.multiply(products, x, tokens: tokens, pool: pool, scratch: &scratch, reusing: false, accumulate: false)
            return
        }
        if precision == .int8, sameWidth, IntegerKernels.level != .portable, products.allSatisfy({ $0.0.format.cKernel != nil && $0.0.format.activationPartner != .q8_K }) {
            IntegerKernels.multiply(products, x, tokens: tokens, pool: pool, scratch: &scratch, reusing: false, accumulate: false)
            return
        }
        for (i, (w, y)) in products.enumerated() {
            multiply(w, x, tokens: tokens, into: y, precision: precision, pool: pool, scratch: &scratch, reusingActivations: i > 0)
        }
    }

    /// Unpacks block `b` of a row; a partial last block (plain float rows only) is read
    /// through a zero-padded copy so nothing past the row is touched.
    @inline(__always)
    static func unpack<L: WeightBlockLayout>(_: L.Type, _ w: WeightMatrix, row: UnsafeRawPointer, block b: Int,
                                            pad: UnsafeMutableRawPointer) -> UnpackedBlock {
        let remaining = w.cols - 32 * b
        if remaining >= 32 { return L.unpack(row, group: b) }
        // Only plain float rows (one value per block) end inside a group.
        pad.initializeMemory(as: UInt8.self, repeating: 0, count: 32 * L.blockBytes)
        pad.copyMemory(from: row + 32 * b * L.blockBytes, byteCount: remaining * L.blockBytes)
        return L.unpack(pad, group: 0)
    }

    static func singleToken<L: WeightBlockLayout>(_ layout: L.Type, _ w: WeightMatrix, _ act: PreparedActivations,
                                                 _ y: UnsafeMutablePointer<Float>, _ rows: Range<Int>, _ accumulate: Bool) {
        withUnsafeTemporaryAllocation(byteCount: 128, alignment: 64) { pad in
            let a = act.block(tile: 0, block: 0)
            for r in rows {
                let row = w.row(r)
                var acc: Float = 0
                for b in 0..<act.blocks {
                    let blk = unpack(layout, w, row: row, block: b, pad: pad.baseAddress!)
                    let ab = a + b * PreparedActivations.stride
                    // The tiled kernel's order for one lane: a fused multiply-add per weight, in
                    // weight order, so a token's result does not depend on its batch.
                    var inner: Float = 0
                    for j in 0..<16 { inner = inner.addingProduct(blk.low[j], ab[j]) }
                    for j in 0..<16 { inner = inner.addingProduct(blk.high[j], ab[16 + j]) }
                    acc += (blk.d * ab[32]) * inner + blk.m * ab[33]
                }
                y[r] = accumulate ? y[r] + acc : acc
            }
        }
    }

    static func tiled<L: WeightBlockLayout>(_ layout: L.Type, _ w: WeightMatrix, _ act: PreparedActivations,
                                           _ y: UnsafeMutablePointer<Float>, _ rows: Range<Int>, _ accumulate: Bool) {
        typealias V = SIMD16<Float>
        let tiles = act.tiles
        withUnsafeTemporaryAllocation(byteCount: 128 + 32 * 4, alignment: 64) { scratch in
            let pad = scratch.baseAddress!
            let wq = (pad + 128).assumingMemoryBound(to: Float.self)
            for r in rows {
                let row = w.row(r)
                var g = 0
                while g < tiles {
                    let group = min(4, tiles - g)
                    var acc = (V(), V(), V(), V())
                    for b in 0..<act.blocks {
                        let blk = unpack(layout, w, row: row, block: b, pad: pad)
                        UnsafeMutableRawPointer(wq).storeBytes(of: blk.low, as: V.self)
                        UnsafeMutableRawPointer(wq + 16).storeBytes(of: blk.high, as: V.self)
                        if group == 4 {
                            let a0 = UnsafeRawPointer(act.block(tile: g, block: b))
                            let a1 = UnsafeRawPointer(act.block(tile: g + 1, block: b))
                            let a2 = UnsafeRawPointer(act.block(tile: g + 2, block: b))
                            let a3 = UnsafeRawPointer(act.block(tile: g + 3, block: b))
                            var s0 = V(), s1 = V(), s2 = V(), s3 = V()
                            for j in 0..<32 {
                                let wj = V(repeating: wq[j])
                                s0.addProduct(wj, a0.loadUnaligned(fromByteOffset: 64 * j, as: V.self))
                                s1.addProduct(wj, a1.loadUnaligned(fromByteOffset: 64 * j, as: V.self))
                                s2.addProduct(wj, a2.loadUnaligned(fromByteOffset: 64 * j, as: V.self))
                                s3.addProduct(wj, a3.loadUnaligned(fromByteOffset: 64 * j, as: V.self))
                            }
                            acc.0 += (blk.d * a0.loadUnaligned(fromByteOffset: 64 * 32, as: V.self)) * s0 + blk.m * a0.loadUnaligned(fromByteOffset: 64 * 33, as: V.self)
                            acc.1 += (blk.d * a1.loadUnaligned(fromByteOffset: 64 * 32, as: V.self)) * s1 + blk.m * a1.loadUnaligned(fromByteOffset: 64 * 33, as: V.self)
                            acc.2 += (blk.d * a2.loadUnaligned(fromByteOffset: 64 * 32, as: V.self)) * s2 + blk.m * a2.loadUnaligned(fromByteOffset: 64 * 33, as: V.self)
                            acc.3 += (blk.d * a3.loadUnaligned(fromByteOffset: 64 * 32, as: V.self)) * s3 + blk.m * a3.loadUnaligned(fromByteOffset: 64 * 33, as: V.self)
                        } else {
                            for k in 0..<group {
                                let a = UnsafeRawPointer(act.block(tile: g + k, block: b))
                                var s = V()
                                for j in 0..<32 { s.addProduct(V(repeating: wq[j]), a.loadUnaligned(fromByteOffset: 64 * j, as: V.self)) }
                                let c = (blk.d * a.loadUnaligned(fromByteOffset: 64 * 32, as: V.self)) * s + blk.m * a.loadUnaligned(fromByteOffset: 64 * 33, as: V.self)
                                switch k {
                                case 0: acc.0 += c
                                case 1: acc.1 += c
                                default: acc.2 += c
                                }
                            }
                        }
                    }
                    for k in 0..<group {
                        let v = k == 0 ? acc.0 : k == 1 ? acc.1 : k == 2 ? acc.2 : acc.3
                        let first = (g + k) * 16
                        for lane in 0..<min(16, act.rows - first) {
                            let slot = y + (first + lane) * w.rows + r
                            slot.pointee = accumulate ? slot.pointee + v[lane] : v[lane]
                        }
                    }
                    g += group
                }
            }
        }
    }
}

extension WeightBlockLayout {
    /// The portable kernels specialised for this layout (a requirement's witness, so a call
    /// through the format's layout lands in a loop compiled for it).
    public static func multiplyRows(_ w: WeightMatrix, _ act: PreparedActivations, _ y: UnsafeMutablePointer<Float>, _ pool: ThreadPool, _ accumulate: Bool) {
        MatMul.run(Self.self, w, act, y, pool, accumulate)
    }
}
