import ArgumentParser
import Foundation
import GGUF

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe a GGUF file: architecture, parameters, tensor types and sizes, metadata.")

    @Argument(help: "Path to a GGUF file.")
    var path: String

    func run() throws {
        try reportingErrors {
            let file = try GGUFFile(path: path)
            let m = file.metadata
            var out = "file: \(path)\nGGUF version \(file.version), \(file.tensors.count) tensors, \(m.count) metadata keys, alignment \(file.alignment)\n"
            out += "architecture: \((try? m.string("general.architecture")) ?? "unknown")\n"
            if let name = try? m.string("general.name") { out += "name: \(name)\n" }
            let parameters = file.tensors.reduce(0) { $0 + $1.elementCount }
            let bytes = file.tensors.reduce(0) { $0 + $1.byteCount }
            out += String(format: "parameters: %d (%.1f M), tensor data %.1f MiB\n", parameters, Double(parameters) / 1e6, Double(bytes) / 1_048_576)
            var byType: [String: (count: Int, bytes: Int)] = [:]
            for t in file.tensors { byType[t.type.name, default: (0, 0)].count += 1; byType[t.type.name]!.bytes += t.byteCount }
            out += "tensor types:\n"
            for (type, v) in byType.sorted(by: { $0.value.bytes > $1.value.bytes }) {
                out += String(format: "  %-6@ %4d tensors %9.2f MiB\n", type as NSString, v.count, Double(v.bytes) / 1_048_576)
            }
            out += "metadata:\n"
            for key in m.keys { out += "  \(key) = \(Self.describe(m[key]!))\n" }
            out += "tensors:\n"
            for t in file.tensors {
                out += "  \(t.name) \(t.type.name) \(t.dimensions.map(String.init).joined(separator: "×")) (\(t.byteCount) bytes)\n"
            }
            writeOut(out)
        }
    }

    static func describe(_ value: GGUFValue) -> String {
        switch value {
        case .string(let s): return s.count > 120 ? (String(reflecting: String(s.prefix(120))) + "… (\(s.count) characters)") : String(reflecting: s)
        case .array(let type, let elements):
            let shown = elements.prefix(5).map(describe).joined(separator: ", ")
            return "[\(shown)\(elements.count > 5 ? ", …" : "")] (\(elements.count) × \(type))"
        default:
            if let i = value.intValue { return String(i) }
            if let d = value.doubleValue { return String(d) }
            if let b = value.boolValue { return String(b) }
            return "\(value)"
        }
    }
}
