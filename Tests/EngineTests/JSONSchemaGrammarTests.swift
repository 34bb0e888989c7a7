import XCTest
import Foundation
@testable import Engine
import Tokenizer
import TestSupport

/// A JSON Schema validator for the subset the grammar compiler supports, written apart from
/// it, to check what comes out of the grammar.
enum SchemaValidator {
    static func errors(_ v: Any, _ schema: Any, root: [String: Any], path: String = "$") -> [String] {
        if let b = schema as? Bool { return b ? [] : ["\(path): schema false"] }
        guard let s = schema as? [String: Any] else { return ["\(path): bad schema"] }
        if let ref = s["$ref"] as? String {
            let parts = ref.split(separator: "/").map(String.init)
            return errors(v, (root[parts[1]] as! [String: Any])[parts[2]]!, root: root, path: path)
        }
        if s["nullable"] as? Bool == true, v is NSNull { return [] }
        if let c = s["const"] { return equal(v, c) ? [] : ["\(path): not the const"] }
        if let e = s["enum"] as? [Any] { return e.contains { equal(v, $0) } ? [] : ["\(path): not in enum"] }
        for key in ["anyOf", "oneOf"] {
            if let options = s[key] as? [Any] {
                return options.contains { errors(v, $0, root: root, path: path).isEmpty } ? [] : ["\(path): matches no option of \(key)"]
            }
        }
        if let all = s["allOf"] as? [Any] { return all.flatMap { errors(v, $0, root: root, path: path) } }
        var types: [String] = []
        if let t = s["type"] as? String { types = [t] } else if let t = s["type"] as? [String] { types = t }
        if !types.isEmpty && !types.contains(where: { has(v, type: $0) }) { return ["\(path): not of type \(types)"] }
        var out: [String] = []
        if let str = v as? String {
            let n = str.count
            if let m = s["minLength"] as? Int, n < m { out.append("\(path): shorter than \(m)") }
            if let m = s["maxLength"] as? Int, n > m { out.append("\(path): longer than \(m)") }
            if let p = s["pattern"] as? String {
                let re = try! NSRegularExpression(pattern: p)
                if re.firstMatch(in: str, range: NSRange(str.startIndex..., in: str)) == nil { out.append("\(path): does not match \(p)") }
            }
            if let f = s["format"] as? String {
                let patterns = ["date": #"^\d{4}-\d{2}-\d{2}$"#, "uuid": #"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"#,
                                "date-time": #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"#]
                let re = try! NSRegularExpression(pattern: patterns[f]!)
                if re.firstMatch(in: str, range: NSRange(str.startIndex..., in: str)) == nil { out.append("\(path): not a \(f)") }
            }
        }
        if let x = number(v) {
            if let m = s["minimum"].flatMap(number), x < m { out.append("\(path): below \(m)") }
            if let m = s["maximum"].flatMap(number), x > m { out.append("\(path): above \(m)") }
            if let m = s["exclusiveMinimum"].flatMap(number), x <= m { out.append("\(path): not above \(m)") }
            if let m = s["exclusiveMaximum"].flatMap(number), x >= m { out.append("\(path): not below \(m)") }
        }
        if let a = v as? [Any] {
            if let m = s["minItems"] as? Int, a.count < m { out.append("\(path): fewer than \(m) items") }
            if let m = s["maxItems"] as? Int, a.count > m { out.append("\(path): more than \(m) items") }
            if let items = s["items"] { for (i, x) in a.enumerated() { out += errors(x, items, root: root, path: "\(path)[\(i)]") } }
        }
        if let o = v as? [String: Any], !(v is NSNull) {
            let props = s["properties"] as? [String: Any] ?? [:]
            for r in s["required"] as? [String] ?? [] where o[r] == nil { out.append("\(path): missing \(r)") }
            for (k, x) in o {
                if let p = props[k] { out += errors(x, p, root: root, path: "\(path).\(k)") }
                else if s["additionalProperties"] as? Bool == false { out.append("\(path): unexpected \(k)") }
                else if let extra = s["additionalProperties"] as? [String: Any] { out += errors(x, extra, root: root, path: "\(path).\(k)") }
            }
        }
        return out
    }

    static func number(_ v: Any) -> Double? {
        if let i = v as? Int { return Double(i) }
        return v as? Double
    }

    static func has(_ v: Any, type: String) -> Bool {
        switch type {
        case "string": return v is String
        case "integer": return number(v).map { $0 == $0.rounded() } ?? false
        case "number": return number(v) != nil
        case "boolean": return v is Bool
        case "null": return v is NSNull
        case "object": return v is [String: Any]
        case "array": return v is [Any]
        default: return false
        }
    }

    static func equal(_ a: Any, _ b: Any) -> Bool {
        switch (a, b) {
        case (let x as String, let y as String): return x == y
        case (let x as Bool, let y as Bool): return x == y
        case (is NSNull, is NSNull): return true
        case (let x as [Any], let y as [Any]): return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (let x as [String: Any], let y as [String: Any]): return x.count == y.count && x.allSatisfy { k, v in y[k].map { equal(v, $0) } ?? false }
        default:
            guard !(a is Bool), !(b is Bool), let x = number(a), let y = number(b) else { return false }
            return x == y
        }
    }

    /// Parses JSON into Swift values (Int, Double, Bool, String, NSNull, arrays, dictionaries).
    static func parse(_ text: String) -> Any? {
        guard let v = try? TemplateValue(parsingJSON: text) else { return nil }
        func plain(_ v: TemplateValue) -> Any {
            switch v {
            case .bool(let b): return b
            case .int(let i): return i
            case .double(let d): return d
            case .string(let s): return s
            case .array(let a): return a.map(plain)
            case .dict(let pairs): return Dictionary(pairs.map { ($0.0, plain($0.1)) }, uniquingKeysWith: { a, _ in a })
            default: return NSNull()
            }
        }
        return plain(v)
    }
}

final class JSONSchemaGrammarTests: XCTestCase {
    static let schemas: [String] = [
        #"{"type":"object","properties":{"name":{"type":"string","maxLength":20},"age":{"type":"integer","minimum":0,"maximum":150},"email":{"type":["string","null"]},"tags":{"type":"array","items":{"type":"string"},"minItems":1,"maxItems":3}},"required":["name","age","tags"]}"#,
        #"{"type":"object","properties":{"user":{"type":"object","properties":{"id":{"type":"integer"},"profile":{"type":"object","properties":{"bio":{"type":"string"},"links":{"type":"array","items":{"type":"object","properties":{"url":{"type":"string","pattern":"^https?://[a-z]+\\.[a-z]{2,3}$"}},"required":["url"]}}},"required":["bio"]}},"required":["id","profile"]},"status":{"enum":["active","disabled","pending"]}},"required":["user","status"],"additionalProperties":false}"#,
        #"{"type":"object","properties":{"value":{"anyOf":[{"type":"integer"},{"type":"string","minLength":2},{"type":"object","properties":{"x":{"type":"number"}},"required":["x"]}]}},"required":["value"]}"#,
        ##"{"$defs":{"Node":{"type":"object","properties":{"value":{"type":"integer","exclusiveMinimum":-5,"maximum":99},"children":{"type":"array","items":{"$ref":"#/$defs/Node"},"maxItems":2}},"required":["value","children"]}},"$ref":"#/$defs/Node"}"##,
        #"{"type":"object","properties":{"score":{"type":"number","minimum":0,"maximum":1},"temp":{"type":"number","minimum":-50,"maximum":60},"count":{"type":"integer","exclusiveMinimum":0,"maximum":1000}},"required":["score","temp","count"]}"#,
        #"{"type":"object","properties":{"kind":{"const":"point"},"ok":{"type":"boolean"},"note":{"type":"string","nullable":true},"when":{"type":"string","format":"date"},"id":{"type":"string","format":"uuid"}}}"#,
        ##"{"title":"Wrapper","type":"object","properties":{"items":{"type":"array","items":{"allOf":[{"$ref":"#/definitions/Item"}]}}},"required":["items"],"definitions":{"Item":{"type":"object","properties":{"sku":{"type":"string","pattern":"^[A-Z]{3}-\\d{3}$"},"qty":{"type":"integer","minimum":1}},"required":["sku","qty"]}}}"##,
    ]

    private static let trie = TokenTrie(tokenizer: try! Tokenizer(file: TestSupport.model(.smolLM2)))

    /// A random walk over the automaton's bytes, closing the structure after `length` bytes.
    private func randomOutput(_ a: GrammarAutomaton, _ rng: inout SplitMix64, length: Int) -> String? {
        var s = a.initial
        var out: [UInt8] = []
        while true {
            if a.isAccepting(s) && (out.count >= length || rng.next() % 8 == 0) { break }
            let c = a.completion(s)
            let options = (0...255).map(UInt8.init).filter { b in
                let t = a.next(s, b)
                return t >= 0 && (out.count < length || a.completion(t) < c)
            }
            if options.isEmpty && a.isAccepting(s) { break }
            guard !options.isEmpty else { return nil }
            let printable = options.filter { $0 >= 0x20 && $0 < 0x7F }
            let pool = !printable.isEmpty && rng.next() % 10 != 0 ? printable : options
            let b = pool[Int(rng.next() % UInt64(pool.count))]
            out.append(b)
            s = a.next(s, b)
        }
        return String(decoding: out, as: UTF8.self)
    }

    func testEveryOutputOfTheGrammarValidates() throws {
        var rng = SplitMix64(seed: 7)
        for schemaText in Self.schemas {
            let schema = SchemaValidator.parse(schemaText) as! [String: Any]
            let gbnf = try JSONSchemaGrammar.gbnf(schema: schemaText)
            let a = try GrammarAutomaton(grammar: Grammar(gbnf: gbnf), trie: Self.trie)
            for i in 0..<150 {
                guard let text = randomOutput(a, &rng, length: 10 + i % 90) else { return XCTFail("a dead end in\n\(gbnf)") }
                guard let value = SchemaValidator.parse(text) else { XCTFail("not JSON: \(text)\n\(gbnf)"); continue }
                XCTAssertEqual(SchemaValidator.errors(value, schema, root: schema), [], "\(text) under \(schemaText)")
            }
        }
    }

    func testWrittenInstancesAreAcceptedAndBadOnesRefused() throws {
        func accepts(_ schema: String, _ text: String) throws -> Bool {
            let a = try GrammarAutomaton(grammar: Grammar(gbnf: JSONSchemaGrammar.gbnf(schema: schema)), trie: Self.trie)
            return a.isAccepting(a.next(a.initial, bytes: Array(text.utf8)))
        }
        let person = Self.schemas[0]
        XCTAssertTrue(try accepts(person, #"{"name": "Ann", "age": 41, "email": null, "tags": ["a", "b"]}"#))
        XCTAssertTrue(try accepts(person, #"{"name":"Ann","age":150,"tags":["x"]}"#))
        XCTAssertFalse(try accepts(person, #"{"name":"Ann","age":151,"tags":["x"]}"#), "above the maximum")
        XCTAssertFalse(try accepts(person, #"{"name":"Ann","age":-1,"tags":["x"]}"#), "below the minimum")
        XCTAssertFalse(try accepts(person, #"{"name":"Ann","age":1,"tags":[]}"#), "too few items")
        XCTAssertFalse(try accepts(person, #"{"name":"Ann","age":1,"tags":["a","b","c","d"]}"#), "too many items")
        XCTAssertFalse(try accepts(person, #"{"age":1,"name":"Ann","tags":["a"]}"#), "properties in the schema's order")
        XCTAssertTrue(try accepts(Self.schemas[1], #"{"user":{"id":7,"profile":{"bio":"hi","links":[{"url":"https://abc.io"}]}},"status":"pending"}"#))
        XCTAssertFalse(try accepts(Self.schemas[1], #"{"user":{"id":7,"profile":{"bio":"hi","links":[{"url":"ftp://abc.io"}]}},"status":"pending"}"#))
        XCTAssertTrue(try accepts(Self.schemas[4], #"{"score":1.0,"temp":-49.5,"count":1000}"#))
        XCTAssertFalse(try accepts(Self.schemas[4], #"{"score":1.5,"temp":0,"count":1}"#))
        XCTAssertFalse(try accepts(Self.schemas[4], #"{"score":0.5,"temp":0,"count":0}"#), "count is above 0")
        XCTAssertTrue(try accepts(Self.schemas[5], #"{}"#))
        XCTAssertTrue(try accepts(Self.schemas[5], #"{"ok":true,"id":"123e4567-e89b-12d3-a456-426614174000"}"#))
        XCTAssertTrue(try accepts(Self.schemas[6], #"{"items":[{"sku":"ABC-123","qty":2}]}"#))
        XCTAssertFalse(try accepts(Self.schemas[6], #"{"items":[{"sku":"AB-123","qty":2}]}"#))
        XCTAssertTrue(try accepts(#"{"type":"array","items":false}"#, "[]"))
        XCTAssertFalse(try accepts(#"{"type":"array","items":false}"#, "[1]"))
        XCTAssertTrue(try accepts(#"{"type":"object","additionalProperties":false}"#, "{}"))
        XCTAssertFalse(try accepts(#"{"type":"object","additionalProperties":false}"#, #"{"a":1}"#))
        XCTAssertTrue(try accepts(#"{"type":"string","pattern":"a\\x01b"}"#, #""a\u0001b""#), "a control character inside a JSON string is escaped")
        XCTAssertTrue(try accepts(#"{"type":"string","format":"email"}"#, #""ann.lee+x@mail.example.org""#))
        XCTAssertFalse(try accepts(#"{"type":"string","format":"email"}"#, #""ann@""#))
        XCTAssertTrue(try accepts(#"{"type":"string","format":"ipv4"}"#, #""192.168.0.255""#))
        XCTAssertFalse(try accepts(#"{"type":"string","format":"ipv4"}"#, #""256.1.1.1""#))
        XCTAssertTrue(try accepts(#"{"type":"string","format":"hostname"}"#, #""api.example-1.com""#))
        XCTAssertTrue(try accepts(#"{"enum":["red","green","greenish",1,null]}"#, #""greenish""#))
        XCTAssertFalse(try accepts(#"{"enum":["red","green","greenish",1,null]}"#, #""gre""#))
    }

    func testIntegerRangesAreExact() throws {
        for (low, high) in [(0, 0), (3, 17), (-25, 130), (-1000, -7), (99, 1001), (0, 9_999)] {
            let schema = #"{"type":"integer","minimum":\#(low),"maximum":\#(high)}"#
            let a = try GrammarAutomaton(grammar: Grammar(gbnf: JSONSchemaGrammar.gbnf(schema: schema)), trie: Self.trie)
            for n in (low - 30)...(high + 30) {
                XCTAssertEqual(a.isAccepting(a.next(a.initial, bytes: Array(String(n).utf8))), (low...high).contains(n), "\(n) in \(low)...\(high)")
            }
            XCTAssertFalse(a.isAccepting(a.next(a.initial, bytes: Array("007".utf8))), "no leading zeros")
        }
    }

    func testUnsupportedOrMaliciousSchemasFailFastNamingTheProblem() {
        func error(_ schema: String) -> String {
            do { _ = try Grammar(gbnf: JSONSchemaGrammar.gbnf(schema: schema)); return "no error" } catch { return "\(error)" }
        }
        XCTAssertEqual(error(#"{"type":"object","properties":{"a":{"type":"string","contentEncoding":"base64"}}}"#),
                       "unsupported: JSON schema keyword 'contentEncoding' (in 'root-a')")
        XCTAssertEqual(error(#"{"type":"array","uniqueItems":true}"#), "unsupported: JSON schema keyword 'uniqueItems' (in 'root')")
        XCTAssertEqual(error(#"{"type":[]}"#), "invalid JSON schema: 'type' in 'root' is an empty list, which nothing matches")
        XCTAssertEqual(error(#"{"properties":{"a":{}},"required":["b"]}"#), "unsupported: 'b' is required in 'root' but not among its properties")
        XCTAssertEqual(error(#"{"anyOf":[{"type":"object"}],"required":["a"]}"#), "unsupported: 'anyOf' together with 'required' (in 'root'); put 'required' inside each option")
        XCTAssertEqual(error(#"{"type":"string","pattern":"a+","maxLength":3}"#), "unsupported: 'minLength'/'maxLength' together with 'pattern' or 'format' (in 'root'); bound the length in the pattern")
        XCTAssertEqual(error(#"{"type":"integer","minimum":1e17}"#), "unsupported: an integer bound of 16 or more digits (100000000000000000 in 'root')")
        XCTAssertEqual(error(#"{"type":"string","format":"uri-template"}"#),
                       "unsupported: string format 'uri-template' (in 'root'); supported: date, time, date-time, uuid, email, hostname, ipv4")
        XCTAssertEqual(error(#"{"type":"string","pattern":"(a)\\1"}"#), "unsupported: backreferences ('\\1') in regular expressions")
        XCTAssertEqual(error(#"{"type":"string","pattern":"a(?=b)"}"#), "unsupported: lookaround and inline flags ('(?') in regular expressions")
        XCTAssertEqual(error(#"{"$ref":"https://example.com/s.json"}"#), "unsupported: '$ref' other than '#/$defs/NAME' or '#/definitions/NAME' (got 'https://example.com/s.json')")
        XCTAssertEqual(error(#"{"type":"integer","minimum":5,"maximum":1}"#), "invalid JSON schema: no integer lies between the bounds of 'root'")
        XCTAssertEqual(error("{"), "invalid JSON schema: not valid JSON (invalid JSON at byte 1: expected a string key)")

        let started = Date()
        let deep = String(repeating: #"{"type":"object","properties":{"a":"#, count: 200) + "{}" + String(repeating: "}}", count: 200)
        XCTAssertEqual(error(deep), "invalid JSON schema: not valid JSON (invalid JSON at byte 2380: nested deeper than 136)")
        let nested = String(repeating: #"{"anyOf":["#, count: 66) + "{}" + String(repeating: "]}", count: 66)
        XCTAssertEqual(error(nested), "grammar too large: a schema nested deeper than 64 levels")
        let huge = #"{"enum":["# + (0..<20_000).map { "\"v\($0)\"" }.joined(separator: ",") + "]}"
        XCTAssertEqual(error(huge), "grammar too large: an enum of more than 10000 values")
        XCTAssertEqual(error(#"{"type":"string","pattern":"(a*)*b"}"#).prefix(19), "grammar rule 'root-")
        XCTAssertEqual(error(#"{"type":"string","maxLength":1000000}"#), "grammar too large: a string length bound above 10000")
        XCTAssertLessThan(Date().timeIntervalSince(started), 2, "refusals are fast")
    }

    func testBigEnumIsOneParseAndCatastrophicRegexIsFine() throws {
        let values = (0..<5_000).map { "\"item-\($0)\"" }.joined(separator: ",")
        let a = try GrammarAutomaton(grammar: Grammar(gbnf: JSONSchemaGrammar.gbnf(schema: #"{"enum":[\#(values)]}"#)), trie: Self.trie)
        XCTAssertTrue(a.isAccepting(a.next(a.initial, bytes: Array(#""item-4321""#.utf8))))
        XCTAssertFalse(a.isAccepting(a.next(a.initial, bytes: Array(#""item-5000""#.utf8))))
        let r = try GrammarAutomaton(grammar: Grammar(gbnf: OutputConstraint.regex("(x+x+)+y").gbnf()), trie: Self.trie)
        XCTAssertFalse(r.isAccepting(r.next(r.initial, bytes: Array(String(repeating: "x", count: 5_000).utf8))))
        XCTAssertTrue(r.isAccepting(r.next(r.initial, bytes: Array((String(repeating: "x", count: 5_000) + "y").utf8))))
    }
}
