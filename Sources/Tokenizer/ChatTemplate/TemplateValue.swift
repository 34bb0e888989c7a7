import Foundation

/// A value inside a chat template: what Jinja's Python values look like to a template.
public indirect enum TemplateValue: Sendable, Equatable {
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([TemplateValue])
    /// Keys keep their insertion order, as Python dicts do.
    case dict([(String, TemplateValue)])
    case namespace(Namespace)

    public static func == (a: TemplateValue, b: TemplateValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): true
        case (.bool(let x), .bool(let y)): x == y
        case (.string(let x), .string(let y)): x == y
        case (.array(let x), .array(let y)): x == y
        case (.dict(let x), .dict(let y)): x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        case (.namespace(let x), .namespace(let y)): x === y
        default:
            if let x = a.number, let y = b.number { x == y } else { false }
        }
    }

    /// A message list entry from role/content pairs.
    public static func message(role: String, content: String) -> TemplateValue {
        .dict([("role", .string(role)), ("content", .string(content))])
    }

    var number: Double? {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        case .bool(let b): b ? 1 : 0
        default: nil
        }
    }

    var isTruthy: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let b): b
        case .int(let i): i != 0
        case .double(let d): d != 0
        case .string(let s): !s.isEmpty
        case .array(let a): !a.isEmpty
        case .dict(let d): !d.isEmpty
        case .namespace: true
        }
    }

    var typeName: String {
        switch self {
        case .undefined: "undefined"
        case .none: "none"
        case .bool: "boolean"
        case .int: "integer"
        case .double: "float"
        case .string: "string"
        case .array: "list"
        case .dict: "dict"
        case .namespace: "namespace"
        }
    }

    func member(_ key: String) -> TemplateValue {
        switch self {
        case .dict(let pairs): pairs.first { $0.0 == key }?.1 ?? .undefined
        case .namespace(let ns): ns.values[key] ?? .undefined
        default: .undefined
        }
    }

    /// What `{{ value }}` prints: Python's `str()`.
    var rendered: String {
        switch self {
        case .undefined: ""
        case .string(let s): s
        default: pythonRepr
        }
    }

    var pythonRepr: String {
        switch self {
        case .undefined: ""
        case .none: "None"
        case .bool(let b): b ? "True" : "False"
        case .int(let i): String(i)
        case .double(let d): d == d.rounded() && abs(d) < 1e16 ? String(format: "%.1f", d) : String(d)
        case .string(let s): "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
        case .array(let a): "[" + a.map(\.pythonRepr).joined(separator: ", ") + "]"
        case .dict(let d): "{" + d.map { "'\($0.0)': \($0.1.pythonRepr)" }.joined(separator: ", ") + "}"
        case .namespace: "<Namespace>"
        }
    }

    /// JSON as Python's `json.dumps(ensure_ascii=False)` writes it (", " and ": ").
    public func json(indent: Int?, level: Int = 0) -> String {
        func quote(_ s: String) -> String {
            var out = "\""
            for u in s.unicodeScalars {
                switch u {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\u{08}": out += "\\b"
                case "\u{0C}": out += "\\f"
                default:
                    if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
                }
            }
            return out + "\""
        }
        let pad = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let close = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        let comma = indent == nil ? ", " : ","
        switch self {
        case .undefined, .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? pythonRepr : (d.isNaN ? "NaN" : d > 0 ? "Infinity" : "-Infinity")
        case .string(let s): return quote(s)
        case .array(let a):
            if a.isEmpty { return "[]" }
            return "[" + a.map { pad + $0.json(indent: indent, level: level + 1) }.joined(separator: comma) + close + "]"
        case .dict(let d):
            if d.isEmpty { return "{}" }
            return "{" + d.map { pad + quote($0.0) + ": " + $0.1.json(indent: indent, level: level + 1) }.joined(separator: comma) + close + "}"
        case .namespace(let ns): return TemplateValue.dict(ns.values.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }).json(indent: indent, level: level)
        }
    }

    /// Converts JSON-like Swift values (from `JSONSerialization`) into template values.
    public init(json: Any) {
        switch json {
        case let s as String: self = .string(s)
        case let n as NSNumber:
            let kind = String(cString: n.objCType)
            if kind == "c" || kind == "B" { self = .bool(n.boolValue) }
            else if kind == "f" || kind == "d" { self = .double(n.doubleValue) }
            else { self = .int(n.intValue) }
        case let a as [Any]: self = .array(a.map { TemplateValue(json: $0) })
        case let d as [String: Any]: self = .dict(d.keys.sorted().map { ($0, TemplateValue(json: d[$0]!)) })
        case is NSNull: self = .none
        default: self = .undefined
        }
    }
}

/// The mutable object `namespace()` returns: the one way a Jinja loop body can change a
/// value seen after the loop.
public final class Namespace: @unchecked Sendable {
    var values: [String: TemplateValue]
    init(_ values: [String: TemplateValue]) { self.values = values }
}
