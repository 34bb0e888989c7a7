import Foundation
import Tokenizer

/// JSON Schema as a GBNF grammar (the conventions of llama.cpp's `json-schema-to-grammar`:
/// object properties in the schema's order, required ones always, optional ones in order
/// and each at most once, whitespace limited so a model cannot pad forever).
///
/// Supported: `type` (one or a list), `properties`, `required`, `additionalProperties`,
/// `items`, `prefixItems`, `minItems`, `maxItems`, `enum`, `const`, `anyOf`, `oneOf` (as
/// `anyOf`), `allOf` of objects, `$ref` into `$defs`/`definitions` (recursion included),
/// `nullable`, strings' `minLength`, `maxLength`, `pattern` and `format` (date, time,
/// date-time, uuid, email, hostname, ipv4), integers' bounds, numbers' integral bounds. Annotations are ignored;
/// any other keyword is refused by name, never silently unenforced.
public struct JSONSchemaGrammar {
    private var rules: [(name: String, body: String)] = []
    private var ruleNames: Set<String> = []
    private var refRules: [String: String] = [:]
    private var root: [String: Any]
    private var size = 0

    static let maxDepth = 64
    static let maxEnumValues = 10_000
    static let maxGrammarBytes = 4 << 20

    static let annotations: Set<String> = ["title", "description", "default", "examples", "$schema", "$id", "$comment",
                                           "readOnly", "writeOnly", "deprecated", "$defs", "definitions", "strict"]
    static let keywords: Set<String> = ["type", "properties", "required", "additionalProperties", "items", "prefixItems",
                                        "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "nullable",
                                        "minLength", "maxLength", "pattern", "format", "minimum", "maximum",
                                        "exclusiveMinimum", "exclusiveMaximum"]

    /// The grammar for a schema given as JSON text.
    public static func gbnf(schema text: String) throws -> String {
        let parsed: TemplateValue
        do { parsed = try TemplateValue(parsingJSON: text, maximumDepth: 2 * maxDepth + 8) } catch let e as TemplateError {
            throw GrammarError.invalidSchema("not valid JSON (\(e.message))")
        }
        return try gbnf(schema: plain(parsed))
    }

    /// The key under which an object's property names are kept in their written order
    /// (a dictionary loses it; a model writes best in the order the schema gives).
    static let orderKey = "\u{0}order"

    /// A parsed JSON value as Foundation-style values, with the property order recorded.
    private static func plain(_ v: TemplateValue) -> Any {
        switch v {
        case .undefined, .none: return NSNull()
        case .bool(let b): return b
        case .int(let i): return i
        case .double(let d): return d
        case .string(let s): return s
        case .array(let a): return a.map(plain)
        case .dict(let pairs):
            var d: [String: Any] = [:]
            for (k, value) in pairs { d[k] = plain(value) }
            if let p = pairs.first(where: { $0.0 == "properties" }), case .dict(let props) = p.1 { d[orderKey] = props.map(\.0) }
            return d
        case .namespace: return NSNull()
        }
    }

    static func gbnf(schema: Any) throws -> String {
        var b = JSONSchemaGrammar(root: schema as? [String: Any] ?? [:])
        let body = try b.visit(schema, name: "root", depth: 0)
        b.add("root", body)
        return b.rules.reversed().map { "\($0.name) ::= \($0.body)" }.joined(separator: "\n") + "\n"
    }

    /// One grammar for several schemas (the arguments of each tool a model may call): each
    /// schema becomes the rule named with it, and `rules` (GBNF bodies by name, `root`
    /// among them) refer to those and to the shared `space` rule.
    public static func gbnf(schemas: [(rule: String, schema: String)], rules: [(name: String, body: String)]) throws -> String {
        var b = JSONSchemaGrammar(root: [:])
        for r in schemas.map(\.rule) + rules.map(\.name) { b.ruleNames.insert(r) }
        for (rule, text) in schemas {
            let parsed: TemplateValue
            do { parsed = try TemplateValue(parsingJSON: text, maximumDepth: 2 * maxDepth + 8) } catch let e as TemplateError {
                throw GrammarError.invalidSchema("not valid JSON (\(e.message))")
            }
            let schema = plain(parsed)
            b.root = schema as? [String: Any] ?? [:]
            b.refRules = [:]
            b.add(rule, try b.visit(schema, name: rule + "-value", depth: 0))
        }
        _ = b.primitive("space")
        for (name, body) in rules { b.add(name, body) }
        return b.rules.reversed().map { "\($0.name) ::= \($0.body)" }.joined(separator: "\n") + "\n"
    }

    /// The grammar of any JSON object (`response_format: json_object`).
    public static let anyObject: String = {
        var b = JSONSchemaGrammar(root: [:])
        b.add("root", b.primitive("object"))
        return b.rules.reversed().map { "\($0.name) ::= \($0.body)" }.joined(separator: "\n") + "\n"
    }()

    private init(root: [String: Any]) { self.root = root }

    // MARK: rules

    private mutating func add(_ name: String, _ body: String) {
        rules.append((name, body))
        ruleNames.insert(name)
    }

    private mutating func unique(_ base: String) -> String {
        let clean = String(base.map { $0.isLetter || $0.isNumber ? $0 : "-" }.prefix(40)).lowercased()
        var name = clean.isEmpty ? "r" : clean
        var n = 1
        while ruleNames.contains(name) || name == "root" && !rules.isEmpty { n += 1; name = "\(clean)-\(n)" }
        ruleNames.insert(name)
        return name
    }

    /// A named rule for `body`, returning its name.
    private mutating func rule(_ base: String, _ body: String) throws -> String {
        size += body.utf8.count
        guard size <= Self.maxGrammarBytes else { throw GrammarError.tooLarge("the schema's grammar exceeds \(Self.maxGrammarBytes >> 20) MiB") }
        let name = unique(base)
        add(name, body)
        return name
    }

    /// Shared rules for JSON's primitive values, made once on first use.
    private mutating func primitive(_ kind: String) -> String {
        let bodies: [String: String] = [
            "space": #"| " " | "\n" [ \t]{0,20}"#,
            "char": #"[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})"#,
            "string": #""\"" char* "\"" space"#,
            "integral-part": #"[0] | [1-9] [0-9]{0,15}"#,
            "integer": #"("-"? integral-part) space"#,
            "number": #"("-"? integral-part) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,3})? space"#,
            "boolean": #"("true" | "false") space"#,
            "null": #""null" space"#,
            "value": "object | array | string | number | boolean | null",
            "object": #""{" space ( string ":" space value ("," space string ":" space value)* )? "}" space"#,
            "array": #""[" space ( value ("," space value)* )? "]" space"#,
        ]
        let uses: [String: [String]] = [
            "string": ["char", "space"], "integer": ["integral-part", "space"], "number": ["integral-part", "space"],
            "boolean": ["space"], "null": ["space"], "value": ["object", "array", "string", "number", "boolean", "null"],
            "object": ["space", "string", "value"], "array": ["space", "value"],
        ]
        if !ruleNames.contains(kind) {
            add(kind, bodies[kind]!)
            for u in uses[kind] ?? [] { _ = primitive(u) }
        }
        return kind
    }

    // MARK: schemas

    private mutating func visit(_ schema: Any, name: String, depth: Int) throws -> String {
        guard depth <= Self.maxDepth else { throw GrammarError.tooLarge("a schema nested deeper than \(Self.maxDepth) levels") }
        if let b = schema as? Bool {
            guard b else { throw GrammarError.invalidSchema("'\(name)' is the schema false, which nothing matches") }
            return primitive("value")
        }
        guard let s = schema as? [String: Any] else { throw GrammarError.invalidSchema("'\(name)' is not an object") }
        for key in s.keys where !Self.keywords.contains(key) && !Self.annotations.contains(key) && key != Self.orderKey {
            throw GrammarError.unsupported("JSON schema keyword '\(key)' (in '\(name)')")
        }
        if s["nullable"] as? Bool == true {
            var inner = s
            inner["nullable"] = nil
            return "(" + (try visit(inner, name: name, depth: depth + 1)) + " | " + primitive("null") + ")"
        }
        if let ref = s["$ref"] as? String { return try reference(ref, depth: depth) }
        if let value = s["const"] { return "(" + GBNFText.literal(try Self.encode(value)) + " " + primitive("space") + ")" }
        if let values = s["enum"] {
            guard let list = values as? [Any], !list.isEmpty else { throw GrammarError.invalidSchema("'enum' in '\(name)' must be a non-empty array") }
            guard list.count <= Self.maxEnumValues else { throw GrammarError.tooLarge("an enum of more than \(Self.maxEnumValues) values") }
            return try rule(name, "(" + Self.literalTrie(try list.map(Self.encode)) + ") " + primitive("space"))
        }
        let combinators = ["anyOf", "oneOf", "allOf"].filter { s[$0] != nil }
        if let c = combinators.first {
            let others = s.keys.filter { !Self.annotations.contains($0) && $0 != Self.orderKey && $0 != c && $0 != "nullable" }.sorted()
            if let other = others.first { throw GrammarError.unsupported("'\(c)' together with '\(other)' (in '\(name)'); put '\(other)' inside each option") }
        }
        for key in ["anyOf", "oneOf"] {
            if let options = s[key] {
                guard let list = options as? [Any], !list.isEmpty else { throw GrammarError.invalidSchema("'\(key)' in '\(name)' must be a non-empty array") }
                let alts = try list.enumerated().map { try visit($0.element, name: "\(name)-\($0.offset)", depth: depth + 1) }
                return try rule(name, alts.joined(separator: " | "))
            }
        }
        if let all = s["allOf"] {
            guard let list = all as? [Any], !list.isEmpty else { throw GrammarError.invalidSchema("'allOf' in '\(name)' must be a non-empty array") }
            if list.count == 1 { return try visit(list[0], name: name, depth: depth + 1) }
            return try visit(try merge(list, name: name), name: name, depth: depth + 1)
        }
        var types: [String]
        switch s["type"] {
        case let t as String: types = [t]
        case let t as [String]:
            guard !t.isEmpty else { throw GrammarError.invalidSchema("'type' in '\(name)' is an empty list, which nothing matches") }
            types = t
        case nil:
            if s["properties"] != nil || s["additionalProperties"] != nil { types = ["object"] }
            else if s["items"] != nil || s["prefixItems"] != nil { types = ["array"] }
            else if s["pattern"] != nil || s["format"] != nil || s["minLength"] != nil || s["maxLength"] != nil { types = ["string"] }
            else { return primitive("value") }
        default: throw GrammarError.invalidSchema("'type' in '\(name)' must be a string or an array of strings")
        }
        if types.count > 1 {
            let alts = try types.map { t -> String in
                var single = s
                single["type"] = t
                return try visit(single, name: "\(name)-\(t)", depth: depth + 1)
            }
            return try rule(name, alts.joined(separator: " | "))
        }
        switch types[0] {
        case "string": return try string(s, name: name)
        case "integer": return try integer(s, name: name)
        case "number": return try number(s, name: name)
        case "boolean": return primitive("boolean")
        case "null": return primitive("null")
        case "object": return try object(s, name: name, depth: depth)
        case "array": return try array(s, name: name, depth: depth)
        default: throw GrammarError.invalidSchema("unknown type '\(types[0])' in '\(name)'")
        }
    }

    private mutating func reference(_ ref: String, depth: Int) throws -> String {
        if let r = refRules[ref] { return r }
        let parts = ref.split(separator: "/").map(String.init)
        guard parts.count == 3, parts[0] == "#", parts[1] == "$defs" || parts[1] == "definitions" else {
            throw GrammarError.unsupported("'$ref' other than '#/$defs/NAME' or '#/definitions/NAME' (got '\(ref)')")
        }
        guard let defs = root[parts[1]] as? [String: Any], let target = defs[parts[2]] else {
            throw GrammarError.invalidSchema("'$ref' '\(ref)' points at nothing")
        }
        // Name the rule before visiting, so a recursive schema refers to it.
        let name = unique(parts[2])
        refRules[ref] = name
        let body = try visit(target, name: name + "-body", depth: depth + 1)
        add(name, body)
        return name
    }

    private func merge(_ list: [Any], name: String) throws -> [String: Any] {
        var properties: [String: Any] = [:], order: [String] = [], required: [String] = []
        for item in list {
            var s = item as? [String: Any] ?? [:]
            if let ref = s["$ref"] as? String {
                let parts = ref.split(separator: "/").map(String.init)
                guard parts.count == 3, let target = (root[parts[1]] as? [String: Any])?[parts[2]] as? [String: Any] else {
                    throw GrammarError.unsupported("'allOf' with the reference '\(ref)' in '\(name)'")
                }
                s = target
            }
            guard s["type"] as? String == "object" || s["properties"] != nil, let p = s["properties"] as? [String: Any] else {
                throw GrammarError.unsupported("'allOf' of anything but objects with properties (in '\(name)')")
            }
            for key in Self.orderedKeys(of: s, p) where properties[key] == nil { order.append(key); properties[key] = p[key] }
            required += s["required"] as? [String] ?? []
        }
        return ["type": "object", "properties": properties, "required": required, Self.orderKey: order]
    }

    private mutating func string(_ s: [String: Any], name: String) throws -> String {
        let q = primitive("space")
        if (s["pattern"] != nil || s["format"] != nil) && (s["minLength"] != nil || s["maxLength"] != nil) {
            throw GrammarError.unsupported("'minLength'/'maxLength' together with 'pattern' or 'format' (in '\(name)'); bound the length in the pattern")
        }
        if let pattern = s["pattern"] {
            guard let p = pattern as? String else { throw GrammarError.invalidSchema("'pattern' in '\(name)' must be a string") }
            var trimmed = p
            if trimmed.hasPrefix("^") { trimmed.removeFirst() }
            if trimmed.hasSuffix("$") && !trimmed.hasSuffix("\\$") { trimmed.removeLast() }
            return try rule(name, #""\"" "# + (try RegexGrammar.gbnf(trimmed, insideJSONString: true)) + #" "\"" "# + q)
        }
        if let format = s["format"] {
            let date = #"[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])"#
            let time = #"([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})? ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])"#
            let body: String
            switch format as? String {
            case "date": body = date
            case "time": body = time
            case "date-time": body = date + #" "T" "# + time
            case "uuid": body = #"[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}"#
            case "email": body = #"[A-Za-z0-9._%+-]{1,64} "@" [A-Za-z0-9-]{1,63} ("." [A-Za-z0-9-]{1,63}){0,4} "." [A-Za-z]{2,24}"#
            case "hostname": body = #"[A-Za-z0-9] [A-Za-z0-9-]{0,62} ("." [A-Za-z0-9] [A-Za-z0-9-]{0,62}){0,8}"#
            case "ipv4":
                let octet = #"("25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9])"#
                body = [octet, octet, octet, octet].joined(separator: #" "." "#)
            default: throw GrammarError.unsupported("string format '\(format)' (in '\(name)'); supported: date, time, date-time, uuid, email, hostname, ipv4")
            }
            return try rule(name, #""\"" "# + body + #" "\"" "# + q)
        }
        let low = try Self.count(s["minLength"], "minLength", name) ?? 0
        let high = try Self.count(s["maxLength"], "maxLength", name)
        if low == 0 && high == nil { return primitive("string") }
        if let high, high < low { throw GrammarError.invalidSchema("'maxLength' below 'minLength' in '\(name)'") }
        guard max(low, high ?? 0) <= GBNFParser.maxRepetition else { throw GrammarError.tooLarge("a string length bound above \(GBNFParser.maxRepetition)") }
        _ = primitive("string")
        return try rule(name, #""\"" char{\#(low),\#(high.map(String.init) ?? "")} "\"" "# + q)
    }

    private mutating func integer(_ s: [String: Any], name: String) throws -> String {
        var low = try Self.bound(s["minimum"], "minimum", name).map { Int(ceil($0)) }
        var high = try Self.bound(s["maximum"], "maximum", name).map { Int(floor($0)) }
        if let x = try Self.bound(s["exclusiveMinimum"], "exclusiveMinimum", name) { low = max(low ?? Int.min, Int(floor(x)) + 1) }
        if let x = try Self.bound(s["exclusiveMaximum"], "exclusiveMaximum", name) { high = min(high ?? Int.max, Int(ceil(x)) - 1) }
        if low == nil && high == nil { return primitive("integer") }
        for b in [low, high].compactMap({ $0 }) where abs(b) >= 1_000_000_000_000_000 {
            throw GrammarError.unsupported("an integer bound of 16 or more digits (\(b) in '\(name)')")
        }
        if let l = low, let h = high, l > h { throw GrammarError.invalidSchema("no integer lies between the bounds of '\(name)'") }
        return try rule(name, "(" + IntegerRange.gbnf(low: low, high: high) + ") " + primitive("space"))
    }

    private mutating func number(_ s: [String: Any], name: String) throws -> String {
        for key in ["exclusiveMinimum", "exclusiveMaximum"] where s[key] != nil {
            throw GrammarError.unsupported("'\(key)' on a number (in '\(name)'); use 'minimum'/'maximum' or an integer")
        }
        let low = try Self.bound(s["minimum"], "minimum", name)
        let high = try Self.bound(s["maximum"], "maximum", name)
        if low == nil && high == nil { return primitive("number") }
        for b in [low, high].compactMap({ $0 }) where b != b.rounded() || abs(b) > 1e15 {
            throw GrammarError.unsupported("a number bound that is not a whole number (\(b) in '\(name)')")
        }
        if let l = low, let h = high, l > h { throw GrammarError.invalidSchema("no number lies between the bounds of '\(name)'") }
        let lo = low.map { Int($0) }, hi = high.map { Int($0) }
        let body: String
        if let lo, lo >= 0 {
            body = Self.magnitude(lo, hi)
        } else if let hi, hi <= 0 {
            body = "\"-\" (" + Self.magnitude(-hi, lo.map { -$0 }) + ")"
        } else {
            body = "\"-\" (" + Self.magnitude(0, lo.map { -$0 }) + ") | " + Self.magnitude(0, hi)
        }
        return try rule(name, "(" + body + ") " + primitive("space"))
    }

    /// Numbers (no sign, no exponent) from `low` to `high`, both whole: an integer part
    /// below the maximum takes any fraction; the maximum itself only zeros.
    private static func magnitude(_ low: Int, _ high: Int?) -> String {
        var alts: [String] = []
        if high.map({ $0 > low }) ?? true {
            alts.append("(" + IntegerRange.gbnf(low: low, high: high.map { $0 - 1 }) + #") ("." [0-9]{1,15})?"#)
        }
        if let high { alts.append(GBNFText.literal(String(high)) + #" ("." "0"{1,15})?"#) }
        return alts.joined(separator: " | ")
    }

    private mutating func object(_ s: [String: Any], name: String, depth: Int) throws -> String {
        let properties = s["properties"] as? [String: Any] ?? [:]
        let order = Self.orderedKeys(of: s, properties)
        let required = Set(s["required"] as? [String] ?? [])
        for r in required.sorted() where properties[r] == nil {
            throw GrammarError.unsupported("'\(r)' is required in '\(name)' but not among its properties")
        }
        let space = primitive("space")
        var pairs: [(key: String, rule: String, required: Bool)] = []
        for key in order {
            let value = try visit(properties[key]!, name: "\(name)-\(key)", depth: depth + 1)
            let kv = try rule("\(name)-\(key)-kv", GBNFText.literal(try Self.encode(key)) + " " + space + " \":\" " + space + " " + value)
            pairs.append((key, kv, required.contains(key)))
        }
        var extra: String? = nil
        switch s["additionalProperties"] {
        case nil: if properties.isEmpty { extra = primitive("value") }
        case false as Bool: break
        case true as Bool: extra = primitive("value")
        case let schema as [String: Any]: extra = try visit(schema, name: "\(name)-additional", depth: depth + 1)
        default: throw GrammarError.invalidSchema("'additionalProperties' in '\(name)' must be a boolean or a schema")
        }
        var extraKV: String? = nil
        if let extra { extraKV = try rule("\(name)-additional-kv", primitive("string") + " \":\" " + space + " " + extra) }

        // In the schema's order, each optional property at most once: `after[i]` is what
        // may follow once a member was written before property i (so a comma comes first),
        // `first[i]` what may come when nothing was written yet.
        let extras = extraKV.map { "(\",\" \(space) \($0))*" } ?? ""
        var after = extras, first = extraKV.map { "(\($0) \(extras))?" } ?? ""
        for pair in pairs.reversed() {
            let nextAfter = after, nextFirst = first
            if pair.required {
                after = try rule("\(name)-after-\(pair.key)", "\",\" \(space) \(pair.rule) \(nextAfter)")
                first = try rule("\(name)-from-\(pair.key)", "\(pair.rule) \(nextAfter)")
            } else {
                after = try rule("\(name)-after-\(pair.key)", "(\",\" \(space) \(pair.rule))? \(nextAfter)")
                first = try rule("\(name)-from-\(pair.key)", "\(pair.rule) \(nextAfter) | \(nextFirst.isEmpty ? "" : nextFirst)")
            }
        }
        return try rule(name, "\"{\" \(space) \(first) \"}\" \(space)")
    }

    private mutating func array(_ s: [String: Any], name: String, depth: Int) throws -> String {
        let space = primitive("space")
        var prefix: [String] = []
        if let p = s["prefixItems"] {
            guard let list = p as? [Any] else { throw GrammarError.invalidSchema("'prefixItems' in '\(name)' must be an array") }
            prefix = try list.enumerated().map { try visit($0.element, name: "\(name)-\($0.offset)", depth: depth + 1) }
        }
        var item: String? = nil
        switch s["items"] {
        case nil: item = prefix.isEmpty ? primitive("value") : nil
        case false as Bool: item = nil
        case let schema?: item = try visit(schema, name: "\(name)-item", depth: depth + 1)
        }
        let low = try Self.count(s["minItems"], "minItems", name) ?? 0
        let high = try Self.count(s["maxItems"], "maxItems", name)
        if let high, high < low { throw GrammarError.invalidSchema("'maxItems' below 'minItems' in '\(name)'") }
        guard max(low, high ?? 0) <= GBNFParser.maxRepetition else { throw GrammarError.tooLarge("an array length bound above \(GBNFParser.maxRepetition)") }
        let sep = "\",\" \(space)"
        if !prefix.isEmpty, s["minItems"] != nil || s["maxItems"] != nil {
            throw GrammarError.unsupported("'minItems'/'maxItems' together with 'prefixItems' (in '\(name)')")
        }
        if !prefix.isEmpty {
            var body = prefix.joined(separator: " \(sep) ")
            if let item { body += " (\(sep) \(item))*" }
            return try rule(name, "\"[\" \(space) \(body) \"]\" \(space)")
        }
        guard let element = item else { return try rule(name, "\"[\" \(space) \"]\" \(space)") }
        let body: String
        if low == 0 {
            let more = high.map { $0 > 1 ? "(\(sep) \(element)){0,\($0 - 1)}" : "" } ?? "(\(sep) \(element))*"
            body = high == 0 ? "" : "(\(element) \(more))?"
        } else {
            let more = high.map { "(\(sep) \(element)){\(low - 1),\($0 - 1)}" } ?? "(\(sep) \(element)){\(low - 1),}"
            body = "\(element) \(more)"
        }
        return try rule(name, "\"[\" \(space) \(body) \"]\" \(space)")
    }

    // MARK: helpers

    /// Properties in the order the schema text gives them (else required ones first, then
    /// by name).
    private static func orderedKeys(of s: [String: Any], _ properties: [String: Any]) -> [String] {
        if let order = s[orderKey] as? [String] { return order.filter { properties[$0] != nil } }
        let required = s["required"] as? [String] ?? []
        return required.filter { properties[$0] != nil } + properties.keys.filter { !required.contains($0) }.sorted()
    }

    private static func numeric(_ v: Any) -> Double? {
        if let i = v as? Int { return Double(i) }
        return v as? Double
    }

    private static func count(_ v: Any?, _ key: String, _ name: String) throws -> Int? {
        guard let v else { return nil }
        guard let n = numeric(v), n >= 0, n == n.rounded() else {
            throw GrammarError.invalidSchema("'\(key)' in '\(name)' must be a non-negative integer")
        }
        return n > 1e9 ? Int(1e9) : Int(n)
    }

    private static func bound(_ v: Any?, _ key: String, _ name: String) throws -> Double? {
        guard let v else { return nil }
        guard let n = numeric(v), n.isFinite, abs(n) < 1e18 else {
            throw GrammarError.invalidSchema("'\(key)' in '\(name)' must be a number")
        }
        return n
    }

    /// JSON text of a value, as compact as a model would likely write it.
    static func encode(_ value: Any) throws -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes]),
              let s = String(data: data, encoding: .utf8) else { throw GrammarError.invalidSchema("a value that is not JSON") }
        return s
    }

    /// Alternatives of literals factored by common prefixes, so that an enum is matched by
    /// one parse, however many values it has.
    static func literalTrie(_ literals: [String]) -> String {
        let sorted = Array(Set(literals.map { Array($0.unicodeScalars) })).sorted { a, b in a.lexicographicallyPrecedes(b) { $0.value < $1.value } }
        func emit(_ items: ArraySlice<[Unicode.Scalar]>, depth: Int) -> String {
            var alts: [String] = []
            var optional = false
            var i = items.startIndex
            while i < items.endIndex {
                let item = items[i]
                if item.count == depth { optional = true; i += 1; continue }
                var j = i + 1
                while j < items.endIndex, items[j].count > depth, items[j][depth] == item[depth] { j += 1 }
                let group = items[i..<j]
                // Extend the shared prefix as far as every member of the group agrees.
                var end = depth + 1
                while group.allSatisfy({ $0.count > end && $0[end] == item[end] }) { end += 1 }
                let head = GBNFText.literal(String(String.UnicodeScalarView(item[depth..<end])))
                let rest = group.count == 1 && item.count == end ? "" : emit(group, depth: end)
                alts.append(rest.isEmpty ? head : head + " " + rest)
                i = j
            }
            if alts.isEmpty { return "" }
            let body = alts.count == 1 && !optional ? alts[0] : "(" + alts.joined(separator: " | ") + ")" + (optional ? "?" : "")
            return body
        }
        return emit(sorted[...], depth: 0)
    }
}

/// The integers in a range as GBNF alternatives, digit by digit (no leading zeros).
enum IntegerRange {
    static func gbnf(low: Int?, high: Int?) -> String {
        var alts: [String] = []
        let lo = low ?? Int.min, hi = high ?? Int.max
        if lo < 0 {
            // Negative part: "-" then magnitudes in [max(1, -hi), -lo].
            let magLow = hi >= 0 ? 1 : -hi
            alts += magnitudes(low: magLow, high: low.map { -$0 }).map { "\"-\" " + $0 }
        }
        if hi >= 0 { alts += magnitudes(low: max(lo, 0), high: high) }
        return alts.joined(separator: " | ")
    }

    /// Non-negative integers in [low, high] (high nil: unbounded, up to 16 digits).
    private static func magnitudes(low: Int, high: Int?) -> [String] {
        let maxDigits = 16
        var alts: [String] = []
        let lowDigits = String(low).count
        let highDigits = high.map { String($0).count } ?? maxDigits
        guard lowDigits <= highDigits else { return [] }
        for n in lowDigits...highDigits {
            let a = max(low, n == 1 ? 0 : power(n - 1))
            let b = min(high ?? Int.max, power(n) - 1)
            if a > b { continue }
            if high == nil && a == power(n - 1) && n > 1 && n == highDigits {
                alts.append("[1-9] [0-9]{\(n - 1)}")
                continue
            }
            alts += sameLength(Array(String(a)), Array(String(b)))
        }
        return alts
    }

    private static func power(_ n: Int) -> Int { (0..<n).reduce(1) { r, _ in r > Int.max / 10 ? Int.max : r * 10 } }

    /// Numbers of one length from a to b (digit strings of equal length).
    private static func sameLength(_ a: [Character], _ b: [Character]) -> [String] {
        if a.isEmpty { return [""] }
        if a.count == 1 { return [a[0] == b[0] ? "[\(a[0])]" : "[\(a[0])-\(b[0])]"] }
        let rest = a.count - 1
        if a[0] == b[0] { return sameLength(Array(a.dropFirst()), Array(b.dropFirst())).map { "[\(a[0])] " + $0 } }
        var alts: [String] = []
        let aRestZero = a.dropFirst().allSatisfy { $0 == "0" }
        let bRestNine = b.dropFirst().allSatisfy { $0 == "9" }
        let first = aRestZero ? a[0] : Character(String(a[0].wholeNumberValue! + 1))
        let last = bRestNine ? b[0] : Character(String(b[0].wholeNumberValue! - 1))
        if !aRestZero { alts += sameLength(Array(a.dropFirst()), Array(repeating: "9", count: rest)).map { "[\(a[0])] " + $0 } }
        if first <= last { alts.append((first == last ? "[\(first)]" : "[\(first)-\(last)]") + " [0-9]{\(rest)}") }
        if !bRestNine { alts += sameLength(Array(repeating: "0", count: rest), Array(b.dropFirst())).map { "[\(b[0])] " + $0 } }
        return alts
    }
}
