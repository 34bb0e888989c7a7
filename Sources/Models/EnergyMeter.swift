import Foundation

/// Energy from Linux powercap (Intel RAPL, also AMD's): each top-level zone
/// `intel-rapl:N` (a CPU package) counts microjoules in `energy_uj`, wrapping at
/// `max_energy_range_uj`; subzones (`intel-rapl:N:M`, cores and DRAM within a package) are
/// already inside their package's count and are left out. Zeus reads the same files. Where
/// no zone is readable (most VMs, or without permission) there is no meter, never an
/// invented number.
public struct EnergyMeter: Sendable {
    struct Zone: Sendable {
        let name: String
        let counter: String
        let range: Double
    }

    let zones: [Zone]

    /// A reading: each zone's counter, in microjoules.
    public struct Reading: Sendable {
        let microjoules: [Double]
    }

    /// The meter over `root`'s package zones, or nil with `unavailable` saying why.
    public init?(root: String = "/sys/class/powercap") {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted()
        zones = names.compactMap { entry in
            // Top-level zones only: one colon (intel-rapl:0), not two (intel-rapl:0:1).
            guard entry.split(separator: ":").count == 2, entry.hasPrefix("intel-rapl") || entry.hasPrefix("amd-rapl") else { return nil }
            let directory = root + "/" + entry
            guard Self.number(directory + "/energy_uj") != nil, let range = Self.number(directory + "/max_energy_range_uj"), range > 0 else { return nil }
            let name = (try? String(contentsOfFile: directory + "/name", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? entry
            return Zone(name: name, counter: directory + "/energy_uj", range: range)
        }
        if zones.isEmpty { return nil }
    }

    /// Why there is no meter at `root`.
    public static func unavailable(root: String = "/sys/class/powercap") -> String {
        "unavailable: no readable package zone (intel-rapl:N/energy_uj) under \(root)"
    }

    public var zoneNames: [String] { zones.map(\.name) }

    public func read() -> Reading {
        Reading(microjoules: zones.map { Self.number($0.counter) ?? 0 })
    }

    /// Joules between two readings, across a counter's wrap.
    public func joules(from start: Reading, to end: Reading) -> Double {
        zip(zones.indices, zip(start.microjoules, end.microjoules)).reduce(0) { total, item in
            let (i, (a, b)) = item
            return total + (b >= a ? b - a : zones[i].range - a + b) / 1e6
        }
    }

    private static func number(_ path: String) -> Double? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return Double(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
