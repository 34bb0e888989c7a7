import Foundation
import Tokenizer

/// A request to OpenAI's Responses API (`POST /v1/responses`), read as the chat-completions
/// request it amounts to, so that one parser checks both: `instructions` and `input` (a
/// string, or message, `function_call` and `function_call_output` items) become
/// `messages`, flat function tools become chat tools, `text.format` becomes
/// `response_format`, `max_output_tokens` becomes `max_completion_tokens`. Nothing is
/// stored, so what needs a stored response (`previous_response_id`, item references) is
/// refused by name. `@unchecked Sendable`: its JSON values are built once and only read.
struct ResponsesRequest: @unchecked Sendable {
    /// The chat-completions body, key order kept (schemas mean something in theirs).
    let chat: TemplateValue
    /// The request's fields the response object repeats.
    let echoed: [String: Any]
    let stream: Bool
    /// Where each chat message came from: `instructions` or `input[i]`.
    let messageSources: [String]

    /// Fields that mean the same in both APIs.
    static let sharedFields = ["model", "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
                               "repetition_penalty", "parallel_tool_calls", "user", "stream", "chat_template_kwargs", "priority", "ignore_eos",
                               "stop", "logit_bias"]

    init(json: [String: Any], ordered body: TemplateValue) throws {
        for (field, why) in [("previous_response_id", "this server stores no responses; send the whole conversation in `input`"),
                             ("conversation", "this server stores no conversations; send the whole conversation in `input`"),
                             ("prompt", "prompt templates are not supported; send `instructions` and `input`")] where Self.field(body, field) != nil {
            throw RequestFieldError(param: field, "\(field) is not supported: \(why)")
        }
        if try OpenAIRequest.bool(json, "background") == true {
            throw RequestFieldError(param: "background", "background responses are not supported: this server stores no responses")
        }
        // What `include` can ask for here is only about items this server never makes
        // (reasoning, built-in tools), except the text's log-probabilities.
        if let include = json["include"], !(include is NSNull) {
            guard let names = include as? [String] else { throw RequestFieldError(param: "include", "include must be an array of strings") }
            if names.contains("message.output_text.logprobs") {
                throw RequestFieldError(param: "include", "message.output_text.logprobs is not supported on /v1/responses; use /v1/chat/completions with logprobs")
            }
        }
        if let n = try OpenAIRequest.int(json, "top_logprobs"), n > 0 {
            throw RequestFieldError(param: "top_logprobs", "top_logprobs is not supported on /v1/responses; use /v1/chat/completions with logprobs")
        }
        var chat: [(String, TemplateValue)] = Self.sharedFields.compactMap { key in Self.field(body, key).map { (key, $0) } }
        let turns = try Self.messages(body)
        chat.append(("messages", .array(turns.map(\.value))))
        messageSources = turns.map(\.source)
        if let n = Self.field(body, "max_output_tokens") { chat.append(("max_completion_tokens", n)) }
        if let tools = Self.field(body, "tools") { chat.append(("tools", try Self.tools(tools))) }
        if let choice = Self.field(body, "tool_choice") { chat.append(("tool_choice", try Self.toolChoice(choice))) }
        if let format = Self.field(body, "text").flatMap({ Self.field($0, "format") }), let converted = try Self.responseFormat(format) {
            chat.append(("response_format", converted))
        }
        self.chat = .dict(chat)
        stream = try OpenAIRequest.bool(json, "stream") ?? false
        var echoed: [String: Any] = [:]
        for key in ["instructions", "max_output_tokens", "temperature", "top_p", "tools", "tool_choice", "text", "parallel_tool_calls",
                    "metadata", "user", "reasoning", "truncation"] {
            echoed[key] = json[key] ?? NSNull()
        }
        self.echoed = echoed
    }

    /// A chat-completions error, named as this API spells the field, in its message too.
    func renamed(_ error: RequestFieldError) -> RequestFieldError {
        guard let original = error.param else { return error }
        var param = original
        if let match = param.firstMatch(of: /^messages\[(\d+)\]/), let k = Int(match.1), k < messageSources.count {
            param = messageSources[k] + param.dropFirst(match.0.count)
        }
        for (chat, responses) in [("messages", "input"), ("max_completion_tokens", "max_output_tokens"), ("response_format", "text.format"), (".function.", ".")] {
            param = param.replacingOccurrences(of: chat, with: responses)
        }
        return RequestFieldError(param: param, error.message.replacingOccurrences(of: original, with: param), code: error.code)
    }

    /// A field's value; nil when absent or null.
    static func field(_ value: TemplateValue, _ key: String) -> TemplateValue? {
        guard case .dict(let pairs) = value, let v = pairs.last(where: { $0.0 == key })?.1 else { return nil }
        if case .none = v { return nil }
        return v
    }

    static func string(_ value: TemplateValue, _ key: String, at param: String) throws -> String {
        guard case .string(let s)? = field(value, key) else { throw RequestFieldError(param: "\(param).\(key)", "\(param).\(key) must be a string") }
        return s
    }

    /// `instructions` as a system message, then `input`.
    private static func messages(_ body: TemplateValue) throws -> [Turn] {
        var turns: [Turn] = []
        if let instructions = field(body, "instructions") {
            guard case .string(let s) = instructions else { throw RequestFieldError(param: "instructions", "instructions must be a string") }
            turns.append(Turn(source: "instructions", role: "system", content: s))
        }
        switch field(body, "input") {
        case .string(let text)?:
            turns.append(Turn(source: "input", role: "user", content: text))
        case .array(let items)? where !items.isEmpty:
            for (i, item) in items.enumerated() { try append(item, at: "input[\(i)]", to: &turns) }
        default:
            throw RequestFieldError(param: "input", "input must be a string or a non-empty array of input items")
        }
        return turns
    }

    /// A chat message being built: consecutive `function_call` items are one assistant
    /// message's calls.
    private struct Turn {
        var source: String
        var role: String
        var content: String?
        var calls: [TemplateValue] = []
        var toolCallID: String?

        var value: TemplateValue {
            var pairs: [(String, TemplateValue)] = [("role", .string(role)), ("content", content.map { .string($0) } ?? .none)]
            if !calls.isEmpty { pairs.append(("tool_calls", .array(calls))) }
            if let toolCallID { pairs.append(("tool_call_id", .string(toolCallID))) }
            return .dict(pairs)
        }
    }

    private static func append(_ item: TemplateValue, at param: String, to turns: inout [Turn]) throws {
        guard case .dict = item else { throw RequestFieldError(param: param, "\(param) must be an object") }
        let type: String
        switch field(item, "type") {
        case nil: type = "message"
        case .string(let t)?: type = t
        default: throw RequestFieldError(param: "\(param).type", "\(param).type must be a string")
        }
        switch type {
        case "message":
            let role = try string(item, "role", at: param)
            turns.append(Turn(source: param, role: role, content: try text(field(item, "content"), at: "\(param).content")))
        case "function_call":
            let call: TemplateValue = .dict([
                ("id", .string(try string(item, "call_id", at: param))), ("type", .string("function")),
                ("function", .dict([("name", .string(try string(item, "name", at: param))), ("arguments", .string(try string(item, "arguments", at: param)))])),
            ])
            if let last = turns.last, last.role == "assistant", last.toolCallID == nil {
                turns[turns.count - 1].calls.append(call)
            } else {
                turns.append(Turn(source: param, role: "assistant", content: nil, calls: [call]))
            }
        case "function_call_output":
            turns.append(Turn(source: param, role: "tool", content: try text(field(item, "output"), at: "\(param).output"), toolCallID: try string(item, "call_id", at: param)))
        case "reasoning":
            break // the model's own reasoning from an earlier turn; templates of these models have no place for it
        case "item_reference":
            throw RequestFieldError(param: param, "\(param) is an item reference, which needs stored responses; this server stores none")
        default:
            throw RequestFieldError(param: "\(param).type", "\(param).type must be message, function_call or function_call_output, not \(type.prefix(40))")
        }
    }

    /// A string, or text parts (`input_text`, `output_text`, `refusal`) joined.
    private static func text(_ value: TemplateValue?, at param: String) throws -> String {
        switch value {
        case .string(let s)?: return s
        case .array(let parts)?:
            return try parts.enumerated().map { k, part in
                let type = field(part, "type").flatMap { if case .string(let t) = $0 { t } else { nil } } ?? ""
                switch type {
                case "input_text", "output_text", "text": return try string(part, "text", at: "\(param)[\(k)]")
                case "refusal": return try string(part, "refusal", at: "\(param)[\(k)]")
                default: throw RequestFieldError(param: "\(param)[\(k)]", "\(param)[\(k)]: only text parts are supported, not \(type.isEmpty ? "an untyped part" : type)")
                }
            }.joined()
        default:
            throw RequestFieldError(param: param, "\(param) must be a string or an array of text parts")
        }
    }

    /// `{"type": "function", "name", "description", "parameters", "strict"}` each, as chat's
    /// `{"type": "function", "function": {...}}`.
    private static func tools(_ value: TemplateValue) throws -> TemplateValue {
        guard case .array(let tools) = value else { throw RequestFieldError(param: "tools", "tools must be an array of function tools") }
        return .array(try tools.enumerated().map { i, tool in
            guard case .dict(let pairs) = tool, case .string(let type)? = field(tool, "type") else {
                throw RequestFieldError(param: "tools[\(i)]", "tools[\(i)] must be {\"type\": \"function\", \"name\", \"parameters\"}")
            }
            guard type == "function" else { throw RequestFieldError(param: "tools[\(i)]", "tools[\(i)]: only function tools are supported, not \(type.prefix(40))") }
            return .dict([("type", .string("function")), ("function", .dict(pairs.filter { $0.0 != "type" }))])
        })
    }

    private static func toolChoice(_ value: TemplateValue) throws -> TemplateValue {
        if case .string = value { return value }
        guard case .string("function")? = field(value, "type"), let name = field(value, "name") else {
            throw RequestFieldError(param: "tool_choice", "tool_choice must be none, auto, required or {\"type\": \"function\", \"name\"}")
        }
        return .dict([("type", .string("function")), ("function", .dict([("name", name)]))])
    }

    /// `text.format` as `response_format`; nil for plain text.
    private static func responseFormat(_ format: TemplateValue) throws -> TemplateValue? {
        switch field(format, "type") {
        case .string("text")?: return nil
        case .string("json_object")?: return .dict([("type", .string("json_object"))])
        case .string("json_schema")?:
            guard case .dict(let pairs) = format else { return nil }
            return .dict([("type", .string("json_schema")), ("json_schema", .dict(pairs.filter { $0.0 != "type" }))])
        default:
            throw RequestFieldError(param: "text.format", "text.format.type must be text, json_object or json_schema")
        }
    }
}
