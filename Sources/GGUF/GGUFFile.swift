#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One tensor of a GGUF file's directory, validated against the file.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    public let type: GGMLType
    /// Dimensions in ggml order: `dimensions[0]` is the row length (contiguous).
    public let dimensions: [Int]
    public let elementCount: Int
    /// Offset of the tensor's bytes from the start of the file.
    public let fileOffset: Int
    public let byteCount: Int

    public var rowLength: Int { dimensions[0] }
    public var rowCount: Int { elementCount / dimensions[0] }
}

/// A GGUF v2 or v3 file, memory-mapped and validated before anything in it is trusted.
/// Tensor data is never copied: `data(of:)` returns a view into the mapping, which lives as
/// long as this object.
public final class GGUFFile: @unchecked Sendable {
    public static let magic: UInt32 = 0x4655_4747  // "GGUF" read as little-endian
    public static let defaultAlignment = 32
    static let maximumDimensions = 4
    static let maximumArrayNesting = 4

    public let version: UInt32
    public let metadata: GGUFMetadata
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let dataOffset: Int
    public let fileSize: Int
    private let tensorIndex: [String: Int]
    private let mapping: UnsafeRawBufferPointer
    private let ownsMapping: Bool

    /// Where a file's bytes live while it is in use.
    public enum Residency: String, Sendable, CaseIterable {
        /// Memory-mapped from the file (its pages are the page cache's: 4 KiB).
        case mapped
        /// Read at open into anonymous memory that asks for 2 MiB transparent huge pages:
        /// decoding streams every weight per token, and on these machines a streaming read
        /// is faster on huge pages (DESIGN.md), at the price of a copy at load and memory
        /// the page cache cannot share.
        case hugePages = "huge-pages"
    }

    /// Opens and validates the file at `path`, mapped or copied as `residency` says.
    public convenience init(path: String, residency: Residency) throws {
        guard residency == .hugePages else { try self.init(path: path); return }
        let (fd, size) = try Self.openRegularFile(path)
        defer { close(fd) }
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else {
            throw GGUFError(field: "file", "cannot allocate \(size) bytes for \(path)")
        }
        #if os(Linux)
        _ = madvise(base, size, MADV_HUGEPAGE)
        #endif
        var done = 0
        while done < size {
            let n = pread(fd, base + done, min(size - done, 1 << 26), off_t(done))
            guard n > 0 else {
                munmap(base, size)
                throw GGUFError(field: "file", "cannot read \(path) at byte \(done): \(n < 0 ? String(cString: strerror(errno)) : "unexpected end")")
            }
            done += n
        }
        let buffer = UnsafeRawBufferPointer(start: base, count: size)
        do {
            try self.init(mapping: buffer, ownsMapping: true)
        } catch {
            munmap(base, size)
            throw error
        }
    }

    /// Maps and validates the file at `path`.
    public convenience init(path: String) throws {
        let (fd, size) = try Self.openRegularFile(path)
        defer { close(fd) }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw GGUFError(field: "file", "cannot memory-map \(path)")
        }
        let buffer = UnsafeRawBufferPointer(start: base, count: size)
        do {
            try self.init(mapping: buffer, ownsMapping: true)
        } catch {
            munmap(base, size)
            throw error
        }
    }

    /// Opens `path` for reading: a regular file at least as long as a GGUF header.
    private static func openRegularFile(_ path: String) throws -> (Int32, Int) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw GGUFError(field: "file", "cannot open \(path): \(String(cString: strerror(errno)))") }
        var info = stat()
        guard fstat(fd, &info) == 0 else { close(fd); throw GGUFError(field: "file", "cannot stat \(path)") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { close(fd); throw GGUFError(field: "file", "\(path) is not a regular file") }
        let size = Int(info.st_size)
        guard size >= 24 else { close(fd); throw GGUFError(field: "header", "file is \(size) bytes, too short for a GGUF header (24)") }
        return (fd, size)
    }

    /// Parses bytes already in memory (a copy is made, so the caller's buffer may go away).
    public convenience init(bytes: [UInt8]) throws {
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        bytes.withUnsafeBytes { copy.copyMemory(from: $0) }
        do {
            try self.init(mapping: UnsafeRawBufferPointer(start: copy.baseAddress, count: bytes.count), ownsMapping: false)
        } catch {
            copy.deallocate()
            throw error
        }
    }

    private init(mapping: UnsafeRawBufferPointer, ownsMapping: Bool) throws {
        var cursor = ByteCursor(mapping)
        let magic = try cursor.read(UInt32.self, field: "header.magic")
        guard magic == Self.magic else {
            throw GGUFError(field: "header.magic", "expected \"GGUF\", found 0x\(String(magic, radix: 16))")
        }
        let version = try cursor.read(UInt32.self, field: "header.version")
        guard version == 2 || version == 3 else {
            throw GGUFError(field: "header.version", "version \(version) is not supported (2 and 3 are)")
        }
        // The smallest tensor entry: empty name (8), one dimension (4 + 8), type (4), offset (8).
        let tensorCount = try cursor.readCount(field: "header.tensor_count", minimumBytes: 32)
        // The smallest metadata entry: empty key (8), type (4), one byte of value.
        let kvCount = try cursor.readCount(field: "header.metadata_kv_count", minimumBytes: 13)

        var metadata = GGUFMetadata()
        for index in 0..<kvCount {
            let key = try cursor.readString(field: "metadata[\(index)].key")
            guard metadata[key] == nil else { throw GGUFError(field: key, "duplicate metadata key") }
            let rawType = try cursor.read(UInt32.self, field: key)
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(field: key, "unknown value type \(rawType)")
            }
            metadata[key] = try Self.readValue(type, from: &cursor, field: key, depth: 0)
        }

        var alignment = Self.defaultAlignment
        if let value = metadata["general.alignment"] {
            guard case .uint32(let a) = value else {
                throw GGUFError(field: "general.alignment", "expected uint32, found \(value.type)")
            }
            guard a > 0, a & (a - 1) == 0, a <= 1 << 20 else {
                throw GGUFError(field: "general.alignment", "\(a) is not a power of two up to 1 MiB")
            }
            alignment = Int(a)
        }

        struct Entry { let name: String; let type: GGMLType; let dims: [Int]; let count: Int; let offset: Int; let bytes: Int }
        var entries: [Entry] = []
        entries.reserveCapacity(tensorCount)
        var index: [String: Int] = [:]
        for i in 0..<tensorCount {
            let name = try cursor.readString(field: "tensor[\(i)].name")
            guard index[name] == nil else { throw GGUFError(field: name, "duplicate tensor name") }
            let nDims = try cursor.read(UInt32.self, field: "\(name).n_dims")
            guard nDims >= 1, nDims <= Self.maximumDimensions else {
                throw GGUFError(field: "\(name).n_dims", "\(nDims) dimensions; expected 1 to \(Self.maximumDimensions)")
            }
            var dims: [Int] = []
            var count = 1
            for d in 0..<Int(nDims) {
                let raw = try cursor.read(UInt64.self, field: "\(name).ne[\(d)]")
                guard raw > 0, let dim = Int(exactly: raw) else {
                    throw GGUFError(field: "\(name).ne[\(d)]", "dimension \(raw) is not a positive size")
                }
                let (product, overflow) = count.multipliedReportingOverflow(by: dim)
                guard !overflow else { throw GGUFError(field: "\(name).ne[\(d)]", "element count overflows") }
                count = product
                dims.append(dim)
            }
            let rawType = try cursor.read(UInt32.self, field: "\(name).type")
            guard let type = GGMLType(rawValue: rawType) else {
                throw GGUFError(field: "\(name).type", "unknown tensor type \(rawType)")
            }
            guard let bytes = type.byteCount(elements: count, rowLength: dims[0]) else {
                throw GGUFError(field: "\(name).ne[0]", "row length \(dims[0]) is not a multiple of \(type.name)'s block of \(type.blockSize), or the size overflows")
            }
            let rawOffset = try cursor.read(UInt64.self, field: "\(name).offset")
            guard let offset = Int(exactly: rawOffset) else {
                throw GGUFError(field: "\(name).offset", "offset \(rawOffset) is out of range")
            }
            guard offset % alignment == 0 else {
                throw GGUFError(field: "\(name).offset", "offset \(offset) is not a multiple of the alignment \(alignment)")
            }
            index[name] = entries.count
            entries.append(Entry(name: name, type: type, dims: dims, count: count, offset: offset, bytes: bytes))
        }

        let (padded, overflow) = cursor.offset.addingReportingOverflow(alignment - 1)
        guard !overflow else { throw GGUFError(field: "header", "data offset overflows") }
        let dataOffset = padded / alignment * alignment
        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(entries.count)
        for e in entries {
            let (start, o1) = dataOffset.addingReportingOverflow(e.offset)
            let (end, o2) = start.addingReportingOverflow(e.bytes)
            guard !o1, !o2, end <= mapping.count else {
                throw GGUFError(field: "\(e.name).offset", "bytes \(e.offset)..<\(e.offset &+ e.bytes) of the data section run past the end of the file (\(mapping.count) bytes)")
            }
            tensors.append(GGUFTensorInfo(name: e.name, type: e.type, dimensions: e.dims, elementCount: e.count, fileOffset: start, byteCount: e.bytes))
        }

        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self.tensorIndex = index
        self.alignment = alignment
        self.dataOffset = dataOffset
        self.fileSize = mapping.count
        self.mapping = mapping
        self.ownsMapping = ownsMapping
    }

    deinit {
        if ownsMapping {
            munmap(UnsafeMutableRawPointer(mutating: mapping.baseAddress), mapping.count)
        } else {
            UnsafeMutableRawPointer(mutating: mapping.baseAddress)?.deallocate()
        }
    }

    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The tensor's bytes, a view into the mapping (valid while this file is alive).
    public func data(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: mapping[tensor.fileOffset..<(tensor.fileOffset + tensor.byteCount)])
    }

    private static func readValue(_ type: GGUFValueType, from cursor: inout ByteCursor, field: String, depth: Int) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try cursor.read(UInt8.self, field: field))
        case .int8: return .int8(try cursor.read(Int8.self, field: field))
        case .uint16: return .uint16(try cursor.read(UInt16.self, field: field))
        case .int16: return .int16(try cursor.read(Int16.self, field: field))
        case .uint32: return .uint32(try cursor.read(UInt32.self, field: field))
        case .int32: return .int32(try cursor.read(Int32.self, field: field))
        case .uint64: return .uint64(try cursor.read(UInt64.self, field: field))
        case .int64: return .int64(try cursor.read(Int64.self, field: field))
        case .float32: return .float32(Float(bitPattern: try cursor.read(UInt32.self, field: field)))
        case .float64: return .float64(Double(bitPattern: try cursor.read(UInt64.self, field: field)))
        case .bool:
            let raw = try cursor.read(UInt8.self, field: field)
            guard raw <= 1 else { throw GGUFError(field: field, "bool value \(raw) is neither 0 nor 1") }
            return .bool(raw == 1)
        case .string: return .string(try cursor.readString(field: field))
        case .array:
            guard depth < maximumArrayNesting else {
                throw GGUFError(field: field, "arrays nested deeper than \(maximumArrayNesting)")
            }
            let rawType = try cursor.read(UInt32.self, field: field)
            guard let elementType = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(field: field, "unknown array element type \(rawType)")
            }
            let count = try cursor.readCount(field: field, minimumBytes: elementType.minimumEncodedBytes)
            var elements: [GGUFValue] = []
            elements.reserveCapacity(count)
            for _ in 0..<count {
                elements.append(try readValue(elementType, from: &cursor, field: field, depth: depth + 1))
            }
            return .array(elementType, elements)
        }
    }
}
