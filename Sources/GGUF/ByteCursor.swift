/// A bounds-checked little-endian reader over untrusted bytes. Every read checks the
/// remaining length first, so a lying count or length ends in a `GGUFError`, never a trap.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    private(set) var offset: Int = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func skip(_ count: Int, field: String) throws {
        guard count >= 0, count <= remaining else {
            throw GGUFError(field: field, "needs \(count) bytes at offset \(offset), but the file ends after \(remaining)")
        }
        offset += count
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, field: String) throws -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else {
            throw GGUFError(field: field, "truncated: needs \(size) bytes at offset \(offset), \(remaining) left")
        }
        let value = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += size
        return T(littleEndian: value)
    }

    /// Reads a 64-bit count and checks that `count` items of at least `minimumBytes` each
    /// could fit in what is left of the file.
    mutating func readCount(field: String, minimumBytes: Int) throws -> Int {
        let raw = try read(UInt64.self, field: field)
        guard let count = Int(exactly: raw), count <= remaining / max(minimumBytes, 1) else {
            throw GGUFError(field: field, "count \(raw) cannot fit in the \(remaining) bytes left in the file")
        }
        return count
    }

    mutating func readString(field: String) throws -> String {
        let raw = try read(UInt64.self, field: field)
        guard let length = Int(exactly: raw), length <= remaining else {
            throw GGUFError(field: field, "string length \(raw) runs past the end of the file (\(remaining) bytes left)")
        }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        guard let string = String(validating: slice, as: UTF8.self) else {
            throw GGUFError(field: field, "string is not valid UTF-8")
        }
        offset += length
        return string
    }
}
