/// Finds stop strings in streamed text, holding back any tail that could still become one
/// so that a client never sees part of a stop string.
public struct StopStringMatcher: Sendable {
    public let stops: [String]
    private var buffer = ""

    public init(_ stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds generated text; returns the text safe to emit and whether a stop string ended
    /// generation (the stop string itself and anything after it are dropped).
    public mutating func append(_ text: String) -> (emit: String, stopped: Bool) {
        buffer += text
        if let r = stops.compactMap({ buffer.range(of: $0) }).min(by: { $0.lowerBound < $1.lowerBound }) {
            let out = String(buffer[..<r.lowerBound])
            buffer = ""
            return (out, true)
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        var hold = 0
        for stop in stops {
            for n in stride(from: min(stop.count - 1, buffer.count), to: 0, by: -1) where buffer.hasSuffix(stop.prefix(n)) {
                hold = max(hold, n)
                break
            }
        }
        let cut = buffer.index(buffer.endIndex, offsetBy: -hold)
        let out = String(buffer[..<cut])
        buffer = String(buffer[cut...])
        return (out, false)
    }

    /// Whatever was held back, at the end of generation.
    public mutating func flush() -> String {
        defer { buffer = "" }
        return buffer
    }
}
