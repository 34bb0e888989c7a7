import Digest
import Foundation
import Kernels

/// The wire format of KV blocks shipped from a prefill worker to a decode worker, version 4
/// (version 1 carried Q8_0 and Q4_0 rows unrotated; version 2 one element type for keys and
/// values; version 3 quantized keys with their biases).
/// A stream is a header, then one record per block in prompt order, then an end record, so
/// a receiver imports each block as it arrives (transfer overlaps the sender's compute) and
/// knows a stream cut short from a finished one. Little-endian throughout:
///
///     header  "APKV" · version u16 · element types u16 (ggml's numbering, 1 f16, 8 Q8_0, 2 Q4_0: keys' in the low byte, values' in the high) · layers u32 · row width u32
///             · block size u32 · model identity u64 · CRC-32C u32 of the 28 bytes before it
///     block   tag u32 (1) · index u32 · positions u32 · name u64 · tokens u32 × positions
///             · contents (per layer, positions rows of row width keys, then as many of values, each in its
///             element type) · CRC-32C u32 of the record before it
///     end     tag u32 (2) · record count u32 · CRC-32C u32 of the 8 bytes before it
///     idle    tag u32 (3) · CRC-32C u32 of the tag: nothing yet, the sender is alive (a
///             prompt waiting for its turn), so the receiver's read timeout does not end it
///
/// Blocks are full (positions = block size) and numbered from 0 in prompt order; the last
/// may be partial, holding the first positions of block `index` (the next one, or the last
/// full one again), after which only the end may come. A receiver checks every checksum, that
/// the layout and model are its own, the order, and that each block's name is the name of its
/// tokens after its parent's, so a block can only ever be found by the prompt it was
/// computed for.
public enum KVBlockWire {
    public static let version: UInt16 = 4
    public static let contentType = "application/x-apus-kv-blocks"
    static let magic: [UInt8] = Array("APKV".utf8)
    static let headerBytes = 32
    static let blockTag: UInt32 = 1, endTag: UInt32 = 2, idleTag: UInt32 = 3

    public static func header(_ layout: KVLayout, model: UInt64) -> [UInt8] {
        var out = magic
        out.put(version)
        // The keys' element type in the low byte, the values' in the high one.
        out.put(layout.type.keys.wireCode | layout.type.values.wireCode << 8)
        out.put(UInt32(layout.layers))
        out.put(UInt32(layout.rowWidth))
        out.put(UInt32(layout.blockSize))
        out.put(model)
        out.put(CRC32C.checksum(out))
        return out
    }

    /// Bytes of one block record of `layout` holding `positions` positions (default: full).
    public static func recordBytes(_ layout: KVLayout, positions: Int? = nil) -> Int {
        let p = positions ?? layout.blockSize
        return 20 + 4 * p + layout.bytes(positions: p) + 4
    }

    public static func record(_ block: KVBlock) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(24 + 4 * block.tokens.count + block.contents.count)
        out.put(blockTag)
        out.put(UInt32(block.index))
        out.put(UInt32(block.tokens.count))
        out.put(block.name)
        for t in block.tokens { out.put(UInt32(truncatingIfNeeded: t)) }
        out.append(contentsOf: block.contents)
        out.put(CRC32C.checksum(out))
        return out
    }

    public static func idle() -> [UInt8] {
        var out: [UInt8] = []
        out.put(idleTag)
        out.put(CRC32C.checksum(out))
        return out
    }

    public static func end(blocks: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.put(endTag)
        out.put(UInt32(blocks))
        out.put(CRC32C.checksum(out))
        return out
    }

    /// Reads a stream as its bytes arrive: `feed` returns the blocks completed so far and
    /// throws at the first thing wrong; `finish` throws unless the end record came.
    public struct Decoder {
        public let layout: KVLayout
        public let model: UInt64
        /// The most blocks a stream may carry (the receiver's whole cache, say).
        public let maxBlocks: Int
        private var pending: [UInt8] = []
        private var start = 0
        private var headerRead = false
        /// The names of the full blocks so far, in order.
        private var names: [UInt64] = []
        private var partialRead = false
        /// Records read so far.
        public private(set) var blocks = 0
        public private(set) var complete = false

        public init(layout: KVLayout, model: UInt64, maxBlocks: Int) {
            self.layout = layout
            self.model = model
            self.maxBlocks = maxBlocks
        }

        public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws -> [KVBlock] {
            guard !complete || bytes.isEmpty else { throw KVTransferError.malformed("bytes follow the end record") }
            pending.append(contentsOf: bytes)
            var out: [KVBlock] = []
            while let block = try next() { out.append(block) }
            // Drop what was read once it is most of the buffer, so the buffer stays one record long.
            if start > 0 && start * 2 >= pending.count {
                pending.removeFirst(start)
                start = 0
            }
            return out
        }

        public func finish() throws {
            guard complete else {
                throw KVTransferError.malformed(headerRead ? "the stream ended after \(blocks) blocks, before its end record" : "the stream ended before its header")
            }
        }

        private var available: Int { pending.count - start }

        private mutating func next() throws -> KVBlock? {
            if !headerRead {
                guard available >= KVBlockWire.headerBytes else { return nil }
                try readHeader()
                headerRead = true
            }
            // Idle records are skipped here, in a loop: a stream of them must not nest calls.
            while !complete, available >= 4 {
                let tag: UInt32 = read(at: start)
                switch tag {
                case KVBlockWire.endTag:
                    guard available >= 12 else { return nil }
                    try checkCRC(count: 8)
                    let count: UInt32 = read(at: start + 4)
                    guard Int(count) == blocks else { throw KVTransferError.malformed("the end record counts \(count) blocks; \(blocks) came") }
                    start += 12
                    complete = true
                    guard available == 0 else { throw KVTransferError.malformed("bytes follow the end record") }
                    return nil
                case KVBlockWire.idleTag:
                    guard available >= 8 else { return nil }
                    try checkCRC(count: 4)
                    start += 8
                    continue
                case KVBlockWire.blockTag:
                    guard available >= 12 else { return nil }
                    let positions = Int(read(at: start + 8) as UInt32)
                    guard (1...layout.blockSize).contains(positions) else {
                        throw KVTransferError.malformed("a block of \(positions) positions, in blocks of \(layout.blockSize)")
                    }
                    let size = KVBlockWire.recordBytes(layout, positions: positions)
                    guard available >= size else { return nil }
                    try checkCRC(count: size - 4)
                    let index = Int(read(at: start + 4) as UInt32), isFull = positions == layout.blockSize
                    guard !partialRead else { throw KVTransferError.malformed("a block follows the partial block, which ends the prompt") }
                    guard index == names.count || (!isFull && index == names.count - 1) else {
                        throw KVTransferError.malformed("block \(index) came where block \(names.count) was due")
                    }
                    guard blocks < maxBlocks else { throw KVTransferError.malformed("the stream carries more than \(maxBlocks) blocks, more than this cache holds") }
                    let name: UInt64 = read(at: start + 12)
                    let tokens = (0..<positions).map { Int(read(at: start + 20 + 4 * $0) as UInt32) }
                    guard tokens.allSatisfy({ $0 <= Int(Int32.max) }) else { throw KVTransferError.malformed("block \(index) holds a token id past 2^31") }
                    guard name == KVBlock.name(parent: index > 0 ? names[index - 1] : nil, tokens: tokens[...]) else {
                        throw KVTransferError.malformed("block \(index)'s name is not the name of its tokens after block \(index - 1)")
                    }
                    let count = layout.bytes(positions: positions), contentsStart = start + 20 + 4 * positions
                    let contents = Array(pending[contentsStart..<(contentsStart + count)])
                    start += size
                    blocks += 1
                    if isFull { names.append(name) } else { partialRead = true }
                    return KVBlock(index: index, name: name, tokens: tokens, contents: contents)
                default:
                    throw KVTransferError.malformed("record tag \(tag) is not a block (1), the end (2) or idle (3)")
                }
            }
            return nil
        }

        private mutating func readHeader() throws {
            guard Array(pending[start..<(start + 4)]) == KVBlockWire.magic else { throw KVTransferError.malformed("the stream does not start with APKV: it is not KV blocks") }
            try checkCRC(count: KVBlockWire.headerBytes - 4)
            let version: UInt16 = read(at: start + 4), element: UInt16 = read(at: start + 6)
            guard version == KVBlockWire.version else { throw KVTransferError.mismatch("the blocks are in wire format version \(version); this worker reads version \(KVBlockWire.version)") }
            func format(_ type: UInt16) throws -> KVCacheFormat {
                guard let format = KVCacheFormat.allCases.first(where: { $0.wireCode == type }) else {
                    throw KVTransferError.mismatch("the blocks hold element type \(type), which no KV cache type stores; this worker's cache holds \(layout.type)")
                }
                return format
            }
            let theirs = KVLayout(layers: Int(read(at: start + 8) as UInt32), rowWidth: Int(read(at: start + 12) as UInt32),
                                  blockSize: Int(read(at: start + 16) as UInt32), type: KVCacheType(keys: try format(element & 0xFF), values: try format(element >> 8)))
            guard theirs == layout else { throw KVTransferError.mismatch("the blocks have \(theirs); this worker's cache has \(layout)") }
            let identity: UInt64 = read(at: start + 20)
            guard identity == model else {
                throw KVTransferError.mismatch("the blocks come from another model (identity \(String(identity, radix: 16)); this worker's is \(String(model, radix: 16)))")
            }
            start += KVBlockWire.headerBytes
        }

        private func checkCRC(count: Int) throws {
            let expected: UInt32 = read(at: start + count)
            let actual = pending.withUnsafeBytes { CRC32C.update(0, UnsafeRawBufferPointer(rebasing: $0[start..<(start + count)])) }
            guard actual == expected else { throw KVTransferError.malformed("a checksum does not match after \(blocks) blocks: the stream is corrupt") }
        }

        private func read<T: FixedWidthInteger>(at offset: Int) -> T {
            pending.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        }
    }
}

public enum KVTransferError: Error, Equatable, CustomStringConvertible {
    /// The stream is not well-formed blocks: cut short, corrupt or out of order.
    case malformed(String)
    /// Well-formed blocks this worker cannot use: another layout, model or version.
    case mismatch(String)

    public var description: String {
        switch self {
        case .malformed(let m), .mismatch(let m): m
        }
    }
}

extension [UInt8] {
    fileprivate mutating func put<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
