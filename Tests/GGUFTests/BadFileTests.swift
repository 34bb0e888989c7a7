import Foundation
@testable import GGUF
import XCTest

/// Raw little-endian bytes, for crafting files the writer would never produce.
struct RawBytes {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); bytes += s.utf8 }
    mutating func header(tensors: UInt64, kvs: UInt64, version: UInt32 = 3) { u32(GGUFFile.magic); u32(version); u64(tensors); u64(kvs) }
    mutating func tensor(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64) {
        string(name); u32(UInt32(dims.count)); dims.forEach { u64($0) }; u32(type); u64(offset)
    }
    mutating func pad(to alignment: Int = 32) { while bytes.count % alignment != 0 { bytes.append(0) } }
}

final class BadFileTests: XCTestCase {
    /// Crafted files, each wrong in one way, with the field the error must name.
    func craftedFiles() -> [(name: String, field: String, bytes: [UInt8])] {
        var cases: [(String, String, [UInt8])] = []
        func add(_ name: String, _ field: String, _ build: (inout RawBytes) -> Void) {
            var r = RawBytes()
            build(&r)
            cases.append((name, field, r.bytes))
        }
        add("wrong-magic", "header.magic") { r in r.u32(0x4C4C_4747); r.u32(3); r.u64(0); r.u64(0) }
        add("version-1", "header.version") { r in r.header(tensors: 0, kvs: 0, version: 1) }
        add("version-4", "header.version") { r in r.header(tensors: 0, kvs: 0, version: 4) }
        add("huge-tensor-count", "header.tensor_count") { r in r.header(tensors: 1 << 60, kvs: 0) }
        add("huge-kv-count", "header.metadata_kv_count") { r in r.header(tensors: 0, kvs: .max) }
        add("key-length-past-end", "metadata[0].key") { r in r.header(tensors: 0, kvs: 1); r.u64(1 << 62); r.bytes += [UInt8](repeating: 0, count: 16) }
        add("string-value-past-end", "name") { r in r.header(tensors: 0, kvs: 1); r.string("name"); r.u32(8); r.u64(1000) }
        add("array-count-huge", "list") { r in r.header(tensors: 0, kvs: 1); r.string("list"); r.u32(9); r.u32(4); r.u64(1 << 61) }
        add("string-array-count-huge", "list") { r in r.header(tensors: 0, kvs: 1); r.string("list"); r.u32(9); r.u32(8); r.u64(1 << 40) }
        add("unknown-value-type", "k") { r in r.header(tensors: 0, kvs: 1); r.string("k"); r.u32(13); r.u32(0) }
        add("unknown-array-type", "k") { r in r.header(tensors: 0, kvs: 1); r.string("k"); r.u32(9); r.u32(99); r.u64(1); r.u32(0) }
        add("bool-value-2", "k") { r in r.header(tensors: 0, kvs: 1); r.string("k"); r.u32(7); r.bytes.append(2) }
        add("deep-nesting", "k") { r in
            r.header(tensors: 0, kvs: 1); r.string("k"); r.u32(9)
            for _ in 0..<10 { r.u32(9); r.u64(1) }
            r.u32(4); r.u64(1); r.u32(0)
        }
        add("invalid-utf8-key", "metadata[0].key") { r in r.header(tensors: 0, kvs: 1); r.u64(2); r.bytes += [0xC3, 0x28]; r.u32(4); r.u32(0) }
        add("duplicate-key", "k") { r in r.header(tensors: 0, kvs: 2); r.string("k"); r.u32(4); r.u32(1); r.string("k"); r.u32(4); r.u32(2) }
        add("alignment-not-power-of-two", "general.alignment") { r in r.header(tensors: 0, kvs: 1); r.string("general.alignment"); r.u32(4); r.u32(48) }
        add("alignment-wrong-type", "general.alignment") { r in r.header(tensors: 0, kvs: 1); r.string("general.alignment"); r.u32(10); r.u64(32) }
        add("zero-dimensions", "t.n_dims") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [], type: 0, offset: 0); r.pad(); r.bytes += [UInt8](repeating: 0, count: 64) }
        add("five-dimensions", "t.n_dims") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [1, 1, 1, 1, 1], type: 0, offset: 0) }
        add("dimension-zero", "t.ne[1]") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [4, 0], type: 0, offset: 0) }
        add("dimensions-overflow", "t.ne[1]") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [1 << 32, 1 << 32, 1 << 32], type: 0, offset: 0) }
        add("size-overflow", "t.ne[0]") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [1 << 62], type: 0, offset: 0) }
        add("unknown-tensor-type", "t.type") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [4], type: 4, offset: 0) }
        add("row-not-whole-blocks", "t.ne[0]") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [33], type: 2, offset: 0) }
        add("offset-unaligned", "t.offset") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [4], type: 0, offset: 4); r.pad(); r.bytes += [UInt8](repeating: 0, count: 64) }
        add("offset-out-of-range", "t.offset") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [4], type: 0, offset: 1 << 40); r.pad(); r.bytes += [UInt8](repeating: 0, count: 64) }
        add("offset-overflow", "t.offset") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [4], type: 0, offset: UInt64(Int64.max) - 31); r.pad() }
        add("data-past-end", "t.offset") { r in r.header(tensors: 1, kvs: 0); r.tensor("t", dims: [64], type: 0, offset: 0); r.pad(); r.bytes += [UInt8](repeating: 0, count: 100) }
        add("duplicate-tensor", "t") { r in
            r.header(tensors: 2, kvs: 0); r.tensor("t", dims: [4], type: 0, offset: 0); r.tensor("t", dims: [4], type: 0, offset: 32)
            r.pad(); r.bytes += [UInt8](repeating: 0, count: 64)
        }
        add("tensor-name-past-end", "tensor[0].name") { r in r.header(tensors: 1, kvs: 0); r.u64(1 << 50); r.bytes += [UInt8](repeating: 0, count: 40) }
        return cases
    }

    func testCraftedBadFilesAreRejectedNamingTheField() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("apus-bad-gguf-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let cases = craftedFiles()
        for c in cases { try Data(c.bytes).write(to: directory.appendingPathComponent(c.name + ".gguf")) }
        for c in cases {
            XCTAssertThrowsError(try GGUFFile(path: directory.appendingPathComponent(c.name + ".gguf").path), c.name) { error in
                guard let e = error as? GGUFError else { return XCTFail("\(c.name): \(error) is not a GGUFError") }
                XCTAssertEqual(e.field, c.field, "\(c.name): \(e)")
                XCTAssertFalse(e.problem.isEmpty)
            }
        }
    }

    func testEveryTruncationIsRejected() throws {
        let bytes = sampleWriter().encode()
        let lastTensorEnd = try GGUFFile(bytes: bytes).tensors.map { $0.fileOffset + $0.byteCount }.max()!
        for length in 0..<lastTensorEnd {
            XCTAssertThrowsError(try GGUFFile(bytes: Array(bytes[..<length])), "truncated at \(length)") {
                XCTAssertTrue($0 is GGUFError, "truncated at \(length): \($0)")
            }
        }
        let emptyPath = FileManager.default.temporaryDirectory.appendingPathComponent("apus-empty-\(UUID()).gguf").path
        FileManager.default.createFile(atPath: emptyPath, contents: Data())
        defer { try? FileManager.default.removeItem(atPath: emptyPath) }
        XCTAssertThrowsError(try GGUFFile(path: emptyPath)) { XCTAssertEqual(($0 as? GGUFError)?.field, "header") }
    }

    /// Random mutations of a valid file: each parses or throws a GGUFError; nothing traps.
    func testFuzzedFilesNeverCrash() throws {
        let original = sampleWriter().encode()
        var seed = UInt64(12345)
        func next() -> UInt64 { seed = seed &* 6364136223846793005 &+ 1442695040888963407; return seed >> 17 }
        var rejected = 0, accepted = 0
        for _ in 0..<3000 {
            var bytes = original
            for _ in 0..<(1 + Int(next() % 4)) where !bytes.isEmpty {
                let i = Int(next() % UInt64(bytes.count))
                switch next() % 4 {
                case 0: bytes[i] = UInt8(truncatingIfNeeded: next())
                case 1: bytes[i] = 0xFF
                case 2: bytes[i] ^= UInt8(1 << (next() % 8))
                default: bytes = Array(bytes[..<i])
                }
            }
            do {
                let file = try GGUFFile(bytes: bytes)
                for t in file.tensors { _ = file.data(of: t).reduce(0) { $0 &+ $1 } }
                accepted += 1
            } catch is GGUFError {
                rejected += 1
            }
        }
        XCTAssertGreaterThan(rejected, 100)
        XCTAssertGreaterThan(accepted, 10)
    }
}
