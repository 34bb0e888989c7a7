import Digest
import XCTest

/// CRC-32C on every path this machine has, against the standard check values and each other.
final class CRC32CTests: XCTestCase {
    var paths: [CRC32C.Path] { CRC32C.fastest == .hardware ? [.portable, .hardware] : [.portable] }

    func crc(_ bytes: [UInt8], _ path: CRC32C.Path, start: UInt32 = 0) -> UInt32 { bytes.withUnsafeBytes { CRC32C.update(start, $0, path: path) } }

    func testCheckValues() {
        for path in paths {
            XCTAssertEqual(crc(Array("123456789".utf8), path), 0xE306_9283, "\(path)")
            XCTAssertEqual(crc([], path), 0, "\(path)")
            // RFC 3720's test patterns: 32 zero bytes, 32 bytes of 0xff.
            XCTAssertEqual(crc([UInt8](repeating: 0, count: 32), path), 0x8A91_36AA, "\(path)")
            XCTAssertEqual(crc([UInt8](repeating: 0xff, count: 32), path), 0x62A8_AB43, "\(path)")
        }
    }

    func testPathsAgreeOnAwkwardSizesAndSplits() {
        var g = SystemRandomNumberGenerator()
        for size in [1, 7, 8, 9, 63, 64, 65, 1000, 4099] {
            let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &g) }
            let whole = crc(bytes, .portable)
            for path in paths {
                XCTAssertEqual(crc(bytes, path), whole, "\(path), \(size) bytes")
                let cut = size / 3
                XCTAssertEqual(crc(Array(bytes[cut...]), path, start: crc(Array(bytes[..<cut]), path)), whole, "\(path), \(size) bytes in two parts")
            }
        }
    }
}
