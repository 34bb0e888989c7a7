import Foundation
@testable import GGUF
import XCTest

/// A small valid file with every metadata type, nested arrays and tensors of several types.
func sampleWriter(version: UInt32 = 3) -> GGUFWriter {
    var w = GGUFWriter(metadata: GGUFMetadata([
        ("general.architecture", .string("llama")),
        ("u8", .uint8(200)), ("i8", .int8(-5)), ("u16", .uint16(60000)), ("i16", .int16(-300)),
        ("u32", .uint32(4_000_000_000)), ("i32", .int32(-7)), ("u64", .uint64(1 << 40)), ("i64", .int64(-(1 << 40))),
        ("f32", .float32(1.5)), ("f64", .float64(-2.25)), ("flag", .bool(true)), ("text", .string("héllo")),
        ("nested", .array(.array, [.array(.int32, [.int32(1), .int32(2)]), .array(.string, [.string("x")])])),
        ("empty", .array(.float32, [])),
    ]))
    w.version = version
    w.add(.init(name: "a", type: .f32, dimensions: [3, 2], data: [UInt8](repeating: 1, count: 24)))
    w.add(.init(name: "b", type: .q4_1, dimensions: [64], data: [UInt8](repeating: 2, count: 40)))
    w.add(.init(name: "c", type: .f16, dimensions: [5], data: [UInt8](repeating: 3, count: 10)))
    return w
}

final class GGUFReaderTests: XCTestCase {
    /// A file copied into huge-page memory reads exactly as the mapped file; a truncated one
    /// is refused the same way.
    func testHugePageCopyReadsAsTheMappedFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("apus-residency-\(UUID().uuidString).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let bytes = sampleWriter().encode()
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let mapped = try GGUFFile(path: path, residency: .mapped), copied = try GGUFFile(path: path, residency: .hugePages)
        XCTAssertEqual(copied.metadata.keys, mapped.metadata.keys)
        for key in mapped.metadata.keys { XCTAssertEqual(copied.metadata[key], mapped.metadata[key], key) }
        XCTAssertEqual(copied.tensors.map(\.name), mapped.tensors.map(\.name))
        for t in mapped.tensors { XCTAssertEqual(Array(copied.data(of: copied.tensor(named: t.name)!)), Array(mapped.data(of: t)), t.name) }
        FileManager.default.createFile(atPath: path, contents: Data(bytes.prefix(bytes.count / 2)))
        XCTAssertThrowsError(try GGUFFile(path: path, residency: .hugePages))
        XCTAssertThrowsError(try GGUFFile(path: path, residency: .mapped))
    }

    func testWriterRoundTripsEveryValueTypeInVersions2And3() throws {
        for version: UInt32 in [2, 3] {
            let w = sampleWriter(version: version)
            let file = try GGUFFile(bytes: w.encode())
            XCTAssertEqual(file.version, version)
            XCTAssertEqual(file.metadata.keys, w.metadata.keys)
            for key in w.metadata.keys { XCTAssertEqual(file.metadata[key], w.metadata[key], key) }
            XCTAssertEqual(file.tensors.map(\.name), ["a", "b", "c"])
            XCTAssertEqual(file.tensors.map(\.byteCount), [24, 40, 10])
            XCTAssertEqual(file.tensors[0].dimensions, [3, 2])
            for t in file.tensors {
                XCTAssertEqual(t.fileOffset % 32, 0)
                XCTAssertEqual(Array(file.data(of: t)), w.tensors.first { $0.name == t.name }!.data)
            }
        }
    }

    func testCustomAlignmentIsHonoured() throws {
        var w = sampleWriter()
        w.metadata["general.alignment"] = .uint32(64)
        let file = try GGUFFile(bytes: w.encode())
        XCTAssertEqual(file.alignment, 64)
        XCTAssertEqual(file.dataOffset % 64, 0)
        XCTAssertEqual(Array(file.data(of: file.tensor(named: "c")!)), [UInt8](repeating: 3, count: 10))
    }

    func testMemoryMappedFileMatches() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("apus-sample-\(UUID()).gguf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try sampleWriter().write(to: path)
        let file = try GGUFFile(path: path)
        XCTAssertEqual(try file.metadata.string("text"), "héllo")
        XCTAssertEqual(try file.metadata.int("u64"), 1 << 40)
        XCTAssertEqual(Array(file.data(of: file.tensor(named: "b")!)), [UInt8](repeating: 2, count: 40))
    }

    func testTypedAccessorsNameTheKey() throws {
        let file = try GGUFFile(bytes: sampleWriter().encode())
        XCTAssertThrowsError(try file.metadata.string("u8")) { XCTAssertEqual(($0 as? GGUFError)?.field, "u8") }
        XCTAssertThrowsError(try file.metadata.int("missing")) { XCTAssertEqual($0 as? GGUFError, GGUFError(field: "missing", "missing")) }
        XCTAssertThrowsError(try file.metadata.stringArray("nested")) { XCTAssertEqual(($0 as? GGUFError)?.field, "nested") }
    }
}
