/// The key-value metadata of a GGUF file, in file order, with typed accessors that throw a
/// `GGUFError` naming the key when a value is missing or of the wrong type.
public struct GGUFMetadata: Sendable {
    public private(set) var keys: [String] = []
    private var values: [String: GGUFValue] = [:]

    public init() {}

    public init(_ pairs: [(String, GGUFValue)]) {
        for (key, value) in pairs { self[key] = value }
    }

    public subscript(key: String) -> GGUFValue? {
        get { values[key] }
        set {
            if values[key] == nil, newValue != nil { keys.append(key) }
            if newValue == nil { keys.removeAll { $0 == key } }
            values[key] = newValue
        }
    }

    public var count: Int { keys.count }

    private func require(_ key: String) throws -> GGUFValue {
        guard let value = values[key] else { throw GGUFError(field: key, "missing") }
        return value
    }

    public func string(_ key: String) throws -> String {
        let value = try require(key)
        guard let s = value.stringValue else { throw GGUFError(field: key, "expected a string, found \(value.type)") }
        return s
    }

    public func int(_ key: String) throws -> Int {
        let value = try require(key)
        guard let i = value.intValue else { throw GGUFError(field: key, "expected an integer, found \(value.type)") }
        return i
    }

    public func double(_ key: String) throws -> Double {
        let value = try require(key)
        guard let d = value.doubleValue else { throw GGUFError(field: key, "expected a number, found \(value.type)") }
        return d
    }

    public func bool(_ key: String) throws -> Bool {
        let value = try require(key)
        guard let b = value.boolValue else { throw GGUFError(field: key, "expected a bool, found \(value.type)") }
        return b
    }

    public func optionalString(_ key: String) throws -> String? { values[key] == nil ? nil : try string(key) }
    public func optionalInt(_ key: String) throws -> Int? { values[key] == nil ? nil : try int(key) }
    public func optionalDouble(_ key: String) throws -> Double? { values[key] == nil ? nil : try double(key) }
    public func optionalBool(_ key: String) throws -> Bool? { values[key] == nil ? nil : try bool(key) }

    private func array(_ key: String, of expected: Set<GGUFValueType>) throws -> [GGUFValue] {
        let value = try require(key)
        guard case .array(let type, let elements) = value else {
            throw GGUFError(field: key, "expected an array, found \(value.type)")
        }
        guard expected.contains(type) else { throw GGUFError(field: key, "expected an array of \(expected.map { "\($0)" }.sorted().joined(separator: " or ")), found an array of \(type)") }
        return elements
    }

    public func stringArray(_ key: String) throws -> [String] {
        try array(key, of: [.string]).map { $0.stringValue! }
    }

    public func floatArray(_ key: String) throws -> [Float] {
        try array(key, of: [.float32, .float64]).map { Float($0.doubleValue!) }
    }

    public func intArray(_ key: String) throws -> [Int] {
        let elements = try array(key, of: [.int8, .uint8, .int16, .uint16, .int32, .uint32, .int64, .uint64])
        return try elements.map {
            guard let i = $0.intValue else { throw GGUFError(field: key, "element \($0) does not fit an integer") }
            return i
        }
    }
}
