import Foundation

/// Builds a GGUF v3 file: metadata in insertion order, then tensors laid out at the
/// alignment. Used by tests to craft models (valid and invalid) and by `quantize`.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        public var type: GGMLType
        public var dimensions: [Int]
        public var data: [UInt8]

        public init(name: String, type: GGMLType, dimensions: [Int], data: [UInt8]) {
            self.name = name
            self.type = type
            self.dimensions = dimensions
            self.data = data
        }
    }

    public var metadata: GGUFMetadata
    public var tensors: [Tensor] = []
    public var version: UInt32 = 3

    public init(metadata: GGUFMetadata = GGUFMetadata()) {
        self.metadata = metadata
    }

    /// A writer holding a copy of everything in `file`, to be changed and written anew.
    public init(copying file: GGUFFile) {
        self.metadata = file.metadata
        self.version = file.version
        self.tensors = file.tensors.map { Tensor(name: $0.name, type: $0.type, dimensions: $0.dimensions, data: Array(file.data(of: $0))) }
    }

    public mutating func add(_ tensor: Tensor) { tensors.append(tensor) }

    public var alignment: Int {
        if case .uint32(let a)? = metadata["general.alignment"], a > 0 { return Int(a) }
        return GGUFFile.defaultAlignment
    }

    /// The encoded file. Tensor data sizes are written as given; the writer does not
    /// check them, so tests can build files that lie.
    public func encode() -> [UInt8] {
        var out = encodeHeader()
        for t in tensors {
            out.append(contentsOf: t.data)
            out.append(contentsOf: padding(after: t.data.count))
        }
        return out
    }

    /// Writes the file to `path` through a temporary file beside it, tensor by tensor (no
    /// second copy of the data in memory), so a failure leaves no half-written file.
    public func write(to path: String) throws {
        let temporary = path + ".partial"
        try Data().write(to: URL(fileURLWithPath: temporary))
        do {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            defer { try? handle.close() }
            try handle.write(contentsOf: encodeHeader())
            for t in tensors {
                try handle.write(contentsOf: t.data)
                try handle.write(contentsOf: padding(after: t.data.count))
            }
            try handle.synchronize()
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(atPath: temporary, toPath: path)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
    }

    private func padding(after count: Int) -> [UInt8] {
        [UInt8](repeating: 0, count: (alignment - count % alignment) % alignment)
    }

    /// Everything before the first tensor's data: header, metadata, tensor infos, padding.
    private func encodeHeader() -> [UInt8] {
        var out: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func putString(_ s: String) { put(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func putValue(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): put(x)
            case .int8(let x): put(x)
            case .uint16(let x): put(x)
            case .int16(let x): put(x)
            case .uint32(let x): put(x)
            case .int32(let x): put(x)
            case .uint64(let x): put(x)
            case .int64(let x): put(x)
            case .float32(let x): put(x.bitPattern)
            case .float64(let x): put(x.bitPattern)
            case .bool(let x): put(UInt8(x ? 1 : 0))
            case .string(let s): putString(s)
            case .array(let type, let elements):
                put(type.rawValue)
                put(UInt64(elements.count))
                elements.forEach(putValue)
            }
        }
        let align = alignment

        put(GGUFFile.magic)
        put(version)
        put(UInt64(tensors.count))
        put(UInt64(metadata.count))
        for key in metadata.keys {
            let value = metadata[key]!
            putString(key)
            put(value.type.rawValue)
            putValue(value)
        }
        var offset = 0
        for t in tensors {
            putString(t.name)
            put(UInt32(t.dimensions.count))
            t.dimensions.forEach { put(UInt64($0)) }
            put(t.type.rawValue)
            put(UInt64(offset))
            offset += (t.data.count + align - 1) / align * align
        }
        out.append(contentsOf: padding(after: out.count))
        return out
    }
}
