import Foundation
import Kernels

/// The shape of an engine's KV-cache blocks: what two workers must share for one to use
/// the other's blocks.
public struct KVLayout: Sendable, Equatable, CustomStringConvertible {
    public var layers: Int
    /// Values per position per layer, for keys and again for values.
    public var rowWidth: Int
    /// Positions per block.
    public var blockSize: Int
    /// How keys and values are stored.
    public var type: KVCacheType

    public init(layers: Int, rowWidth: Int, blockSize: Int, type: KVCacheType = .f16) {
        self.layers = layers
        self.rowWidth = rowWidth
        self.blockSize = blockSize
        self.type = type
    }

    /// Bytes of one block: per layer its keys, then its values.
    public var bytesPerBlock: Int { bytes(positions: blockSize) }

    /// Bytes of a block's first `positions` positions.
    public func bytes(positions: Int) -> Int { layers * positions * type.rowBytes(rowWidth) }

    public var description: String { "\(layers) layers of \(rowWidth) keys and values per position (\(type)), \(blockSize) positions per block" }
}

/// One block of a prompt's keys and values, as it travels from the worker that computed it
/// to one that continues the prompt (disaggregated prefill, DistServe and Splitwise): its
/// prefix-cache name, the tokens it holds (a whole block's, or fewer for the prompt's last
/// positions), and its contents.
public struct KVBlock: Sendable, Equatable {
    /// Its place in the prompt: it holds positions `index × block size` on.
    public var index: Int
    /// The prefix-cache name (`BlockManager.hash` of the parent block's name and `tokens`).
    public var name: UInt64
    public var tokens: [Int]
    /// `KVLayout.bytes(positions: tokens.count)` bytes: per layer, the block's keys, then its values.
    public var contents: [UInt8]

    public init(index: Int, name: UInt64, tokens: [Int], contents: [UInt8]) {
        self.index = index
        self.name = name
        self.tokens = tokens
        self.contents = contents
    }

    /// The name a block holding `tokens` after the block named `parent` has in every worker.
    public static func name(parent: UInt64?, tokens: ArraySlice<Int>) -> UInt64 { BlockManager.hash(parent: parent, tokens: tokens) }
}

/// What importing a prompt's blocks did.
public struct KVImport: Sendable, Equatable {
    /// Blocks written into the cache and named there.
    public var imported = 0
    /// Blocks the cache already held under their names (nothing was written).
    public var alreadyCached = 0
    /// Blocks left out because no block was free; the worker computes them instead.
    public var dropped = 0

    public init(imported: Int = 0, alreadyCached: Int = 0, dropped: Int = 0) {
        self.imported = imported
        self.alreadyCached = alreadyCached
        self.dropped = dropped
    }
}
