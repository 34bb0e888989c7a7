import Foundation
import Models
import XCTest

/// The powercap reader on a fixture tree laid out like `/sys/class/powercap`.
final class EnergyMeterTests: XCTestCase {
    func zone(_ root: URL, _ name: String, label: String, energy: Int, range: Int = 262_143_328_850) throws {
        let directory = root.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try "\(label)\n".write(to: directory.appendingPathComponent("name"), atomically: true, encoding: .utf8)
        try "\(energy)\n".write(to: directory.appendingPathComponent("energy_uj"), atomically: true, encoding: .utf8)
        try "\(range)\n".write(to: directory.appendingPathComponent("max_energy_range_uj"), atomically: true, encoding: .utf8)
    }

    func testPackagesAreSummedAcrossWrapsAndSubzonesLeftOut() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("powercap-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        try zone(root, "intel-rapl:0", label: "package-0", energy: 1_000_000)
        try zone(root, "intel-rapl:0:0", label: "core", energy: 500_000)
        try zone(root, "intel-rapl:1", label: "package-1", energy: 9_000_000, range: 10_000_000)
        try FileManager.default.createDirectory(at: root.appendingPathComponent("intel-rapl"), withIntermediateDirectories: true)
        let meter = try XCTUnwrap(EnergyMeter(root: root.path))
        XCTAssertEqual(meter.zoneNames, ["package-0", "package-1"])
        let start = meter.read()
        // Package 0 spends 2.5 J; package 1 wraps at 10 J, from 9 J to 0.5 J: 1.5 J.
        try zone(root, "intel-rapl:0", label: "package-0", energy: 3_500_000)
        try zone(root, "intel-rapl:0:0", label: "core", energy: 2_000_000)
        try zone(root, "intel-rapl:1", label: "package-1", energy: 500_000, range: 10_000_000)
        XCTAssertEqual(meter.joules(from: start, to: meter.read()), 4.0, accuracy: 1e-9)
    }

    func testNoReadableZoneMeansNoMeter() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("powercap-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        XCTAssertNil(EnergyMeter(root: root.path), "no directory")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("intel-rapl:0"), withIntermediateDirectories: true)
        XCTAssertNil(EnergyMeter(root: root.path), "a zone without a readable counter")
        XCTAssertEqual(EnergyMeter.unavailable(root: root.path), "unavailable: no readable package zone (intel-rapl:N/energy_uj) under \(root.path)")
    }
}
