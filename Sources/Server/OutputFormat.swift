import Engine
import Foundation
import Tokenizer

/// What a request asks its output to match, from whichever API's field it uses: OpenAI's
/// `response_format` (`text`, `json_object`, `json_schema` with `strict`), llama-server's
/// `grammar` (GBNF) and `json_schema`, vLLM's `guided_json`, `guided_regex` and
/// `guided_choice`. At most one may be given; each is checked here for its shape, and the
/// engine compiles it (an unsupported keyword or construct is a 400 naming it).
enum OutputFormat {
    /// `ordered` is the request body parsed with its key order kept, so that a schema's
    /// properties reach the grammar in the order the client wrote them.
    static func constraint(_ json: [String: Any], ordered: TemplateValue?) throws -> OutputConstraint? {
        var found: [(field: String, constraint: OutputConstraint)] = []
        func present(_ key: String) -> Any? {
            guard let v = json[key], !(v is NSNull) else { return nil }
            return v
        }
        if let format = present("response_format") {
            guard let f = format as? [String: Any], let type = f["type"] as? String else {
                throw RequestFieldError(param: "response_format", "response_format must be an object with a `type` of text, json_object or json_schema")
            }
            switch type {
            case "text": break
            case "json_object":
                if let schema = f["schema"], !(schema is NSNull) {
                    found.append(("response_format", .jsonSchema(try schemaText(schema, path: ["response_format", "schema"], ordered: ordered))))
                } else {
                    found.append(("response_format", .jsonObject))
                }
            case "json_schema":
                guard let spec = f["json_schema"] as? [String: Any] else {
                    throw RequestFieldError(param: "response_format.json_schema", "response_format of type json_schema needs `json_schema`, an object with `name` and `schema`")
                }
                if let strict = spec["strict"], !(strict is NSNull), !OpenAIRequest.isBoolean(strict) {
                    throw RequestFieldError(param: "response_format.json_schema.strict", "response_format.json_schema.strict must be a boolean")
                }
                if let name = spec["name"], !(name is NSNull), !(name is String) {
                    throw RequestFieldError(param: "response_format.json_schema.name", "response_format.json_schema.name must be a string")
                }
                // Strict or not, the schema is enforced: a looser promise would be a silent one.
                let schema = spec["schema"] ?? [String: Any]()
                found.append(("response_format", .jsonSchema(try schemaText(schema, path: ["response_format", "json_schema", "schema"], ordered: ordered))))
            default:
                throw RequestFieldError(param: "response_format.type", "response_format.type must be text, json_object or json_schema, got \(type)")
            }
        }
        if let g = present("grammar") {
            guard let text = g as? String else { throw RequestFieldError(param: "grammar", "grammar must be a string of GBNF rules") }
            found.append(("grammar", .grammar(text)))
        }
        for key in ["json_schema", "guided_json"] {
            guard let schema = present(key) else { continue }
            if let text = schema as? String { found.append((key, .jsonSchema(text))); continue }
            guard schema is [String: Any] || OpenAIRequest.isBoolean(schema) else { throw RequestFieldError(param: key, "\(key) must be a JSON schema") }
            found.append((key, .jsonSchema(try schemaText(schema, path: [key], ordered: ordered))))
        }
        if let r = present("guided_regex") {
            guard let pattern = r as? String else { throw RequestFieldError(param: "guided_regex", "guided_regex must be a string") }
            found.append(("guided_regex", .regex(pattern)))
        }
        if let c = present("guided_choice") {
            guard let options = c as? [Any], !options.isEmpty, options.allSatisfy({ $0 is String }) else {
                throw RequestFieldError(param: "guided_choice", "guided_choice must be a non-empty array of strings")
            }
            found.append(("guided_choice", .choice(options as! [String])))
        }
        if present("guided_grammar") != nil {
            throw RequestFieldError(param: "guided_grammar", "guided_grammar (vLLM's Lark/EBNF) is not supported; send GBNF rules as `grammar`")
        }
        guard found.count <= 1 else {
            throw RequestFieldError(param: found[1].field, "only one output constraint may be given, got \(found.map(\.field).joined(separator: " and "))")
        }
        return found.first?.constraint
    }

    /// A schema as JSON text: from the order-keeping parse where there is one, else
    /// re-encoded (keys sorted).
    static func schemaText(_ value: Any, path: [String], ordered: TemplateValue?, subtree given: TemplateValue? = nil) throws -> String {
        if let given { return given.json(indent: nil) }
        if let ordered, let sub = subtree(ordered, path) { return sub.json(indent: nil) }
        return TemplateValue(json: value).json(indent: nil)
    }

    static func subtree(_ v: TemplateValue, _ path: [String]) -> TemplateValue? {
        var v = v
        for key in path {
            guard case .dict(let pairs) = v, let next = pairs.last(where: { $0.0 == key })?.1 else { return nil }
            v = next
        }
        return v
    }
}
