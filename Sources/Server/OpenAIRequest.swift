import Engine
import Foundation
import Tokenizer

/// A bad field of an OpenAI-style request, named as the request spells it.
public struct RequestFieldError: Error, Equatable, CustomStringConvertible {
    public let param: String?
    public let message: String
    /// OpenAI's machine-readable code, where it has one (`context_length_exceeded`).
    public let code: String?

    public init(param: String?, _ message: String, code: String? = nil) {
        self.param = param
        self.message = message
        self.code = code
    }

    public var description: String { message }
}

/// The fields of an OpenAI completion or chat-completion request: `prompt` (a string, a list
/// of strings, token ids, or lists of token ids) or `messages`, and `max_tokens` /
/// `max_completion_tokens`, `temperature`, `top_p`, `n`, `stop`, `seed`, penalties,
/// `logit_bias`, `logprobs` / `top_logprobs`, `user`, `stream`, `stream_options`, with the common
/// extensions `top_k`, `min_p`, `repetition_penalty`, `ignore_eos`, `priority`. Unknown
/// fields are ignored, as OpenAI's clients expect; defaults are OpenAI's (temperature 1,
/// top-p 1, no top-k or min-p).
public struct OpenAIRequest {
    public enum Kind: Sendable { case completion, chat }

    public enum Prompt: Sendable, Equatable {
        case text(String)
        case tokens([Int])
        case messages([ChatMessage])
    }


    public struct Limits: Sendable {
        /// Most samples per prompt (`n`).
        public var maxSamples = 16
        public var maxStopStrings = 4
        /// Bytes per stop string.
        public var maxStopLength = 1000
        public var maxLogprobs = GenerationRequest.maxLogprobs
        /// Prompts in one completion request.
        public var maxPrompts = 64
        public init() {}
    }

    public let kind: Kind
    public var model: String?
    public var prompts: [Prompt]
    public var parameters = GenerationParameters()
    /// nil: as many as the context leaves.
    public var maxTokens: Int?
    public var samples = 1
    public var logprobs: Int?
    /// Completions: the answer's text and `logprobs` begin with the prompt's (OpenAI's legacy
    /// `echo`, which evaluation harnesses score with).
    public var echo = false
    /// Alternatives for each prompt token's log-probability (vLLM's `prompt_logprobs`).
    public var promptLogprobs: Int?
    /// What the engine scores the prompt with: `prompt_logprobs`, or `logprobs` under `echo`.
    public var scoredPromptLogprobs: Int? {
        let echoed = echo ? logprobs : nil
        return [echoed, promptLogprobs].compactMap { $0 }.max()
    }
    public var priority = 0
    /// Tokens a lost worker already generated for this request (Apus's `resume_token_ids`,
    /// which `apus router` sends when it moves a stream to another replica): generation goes
    /// on after them, and a resumed chat stream does not open with the role chunk again.
    /// nil when the request resumes nothing.
    public var resumeTokens: [Int]?
    public var stream = false
    public var includeUsage = false
    public var user: String?
    /// The functions the model may call (chat only), and how it may.
    public var tools: [ToolDefinition] = []
    public var toolChoice = ToolChoice.none
    public var parallelToolCalls = true
    /// Whether the output is read for tool calls.
    public var usesTools: Bool { !tools.isEmpty && toolChoice != .none }
    /// Variables the chat template sees besides the conversation (vLLM's
    /// `chat_template_kwargs`: `enable_thinking`, ...).
    public var chatTemplateArguments: [String: TemplateValue] = [:]

    /// `ordered`: the same body parsed with its key order kept (for JSON schemas), when
    /// the caller has it.
    public init(json: [String: Any], kind: Kind, limits: Limits = Limits(), ordered: TemplateValue? = nil) throws {
        self.kind = kind
        model = try Self.string(json, "model")
        user = try Self.string(json, "user")
        switch kind {
        case .chat:
            guard let list = json["messages"] as? [Any], !list.isEmpty else {
                throw RequestFieldError(param: "messages", "messages must be a non-empty array of {role, content} objects")
            }
            let messages = try list.enumerated().map { i, item -> ChatMessage in
                guard let m = item as? [String: Any] else { throw RequestFieldError(param: "messages[\(i)]", "messages[\(i)] must be an object") }
                return try Self.message(m, at: i)
            }
            prompts = [.messages(messages)]
            try parseTools(json, ordered: ordered)
            chatTemplateArguments = try Self.templateArguments(json)
        case .completion:
            prompts = try Self.prompts(json["prompt"], maxPrompts: limits.maxPrompts)
        }

        var p = GenerationParameters()
        p.sampling.temperature = 1
        p.sampling.topK = 0
        p.sampling.topP = 1
        p.sampling.minP = 0
        let maxKey = json["max_completion_tokens"].map { !($0 is NSNull) } == true ? "max_completion_tokens" : "max_tokens"
        if kind == .completion { echo = try Self.bool(json, "echo") ?? false }
        if let k = try Self.int(json, "prompt_logprobs") {
            guard (0...limits.maxLogprobs).contains(k) else { throw RequestFieldError(param: "prompt_logprobs", "prompt_logprobs must be between 0 and \(limits.maxLogprobs), got \(k)") }
            promptLogprobs = k
        }
        if let n = try Self.int(json, maxKey) {
            // 0 asks for the prompt alone, which only an echoed or scored prompt makes useful.
            let least = echo || promptLogprobs != nil ? 0 : 1
            guard n >= least else {
                throw RequestFieldError(param: maxKey, "\(maxKey) must be at least 1, got \(n)\(least == 1 && n == 0 ? " (0 is allowed with echo or prompt_logprobs)" : "")")
            }
            maxTokens = n
        }
        if let t = try Self.number(json, "temperature") {
            guard (0...2).contains(t) else { throw RequestFieldError(param: "temperature", "temperature must be between 0 and 2, got \(t)") }
            p.sampling.temperature = Float(t)
        }
        if let v = try Self.number(json, "top_p") {
            guard v > 0 && v <= 1 else { throw RequestFieldError(param: "top_p", "top_p must be in (0, 1], got \(v)") }
            p.sampling.topP = Float(v)
        }
        if let k = try Self.int(json, "top_k") {
            guard k >= -1 else { throw RequestFieldError(param: "top_k", "top_k must be -1 or 0 (off) or positive, got \(k)") }
            p.sampling.topK = max(0, k)
        }
        if let v = try Self.number(json, "min_p") {
            guard (0...1).contains(v) else { throw RequestFieldError(param: "min_p", "min_p must be in [0, 1], got \(v)") }
            p.sampling.minP = Float(v)
        }
        for (key, path) in [("presence_penalty", \SamplingParameters.presencePenalty), ("frequency_penalty", \SamplingParameters.frequencyPenalty)] {
            if let v = try Self.number(json, key) {
                guard (-2...2).contains(v) else { throw RequestFieldError(param: key, "\(key) must be between -2 and 2, got \(v)") }
                p.sampling[keyPath: path] = Float(v)
            }
        }
        if let v = try Self.number(json, "repetition_penalty") {
            guard v > 0 && v <= 10 else { throw RequestFieldError(param: "repetition_penalty", "repetition_penalty must be in (0, 10], got \(v)") }
            p.sampling.repetitionPenalty = Float(v)
        }
        if let seed = try Self.int(json, "seed") { p.sampling.seed = UInt64(bitPattern: Int64(seed)) }
        if let stop = json["stop"], !(stop is NSNull) {
            if let s = stop as? String {
                p.stopStrings = [s]
            } else if let list = stop as? [Any], list.allSatisfy({ $0 is String }) {
                p.stopStrings = list as! [String]
            } else {
                throw RequestFieldError(param: "stop", "stop must be a string or an array of strings")
            }
            guard p.stopStrings.count <= limits.maxStopStrings else {
                throw RequestFieldError(param: "stop", "at most \(limits.maxStopStrings) stop strings, got \(p.stopStrings.count)")
            }
            guard p.stopStrings.allSatisfy({ $0.utf8.count <= limits.maxStopLength }) else {
                throw RequestFieldError(param: "stop", "stop strings must be at most \(limits.maxStopLength) bytes")
            }
        }
        if let ignore = try Self.bool(json, "ignore_eos") { p.ignoreEndOfGeneration = ignore }
        p.constraint = try OutputFormat.constraint(json, ordered: ordered)
        if usesTools, p.constraint != nil {
            throw RequestFieldError(param: "tools", "tool calls and an output constraint (response_format, grammar, guided_*) cannot be combined; send one")
        }
        if let biases = json["logit_bias"], !(biases is NSNull) {
            guard let map = biases as? [String: Any] else { throw RequestFieldError(param: "logit_bias", "logit_bias must map token ids to numbers") }
            for (key, value) in map {
                guard let token = Int(key), token >= 0 else { throw RequestFieldError(param: "logit_bias", "logit_bias keys must be token ids, got \(key)") }
                guard let n = value as? NSNumber, !Self.isBoolean(n), n.doubleValue.isFinite, abs(n.doubleValue) <= 100 else {
                    throw RequestFieldError(param: "logit_bias", "logit_bias values must be numbers between -100 and 100")
                }
                p.sampling.logitBias[token] = Float(n.doubleValue)
            }
        }
        parameters = p
        if let n = try Self.int(json, "n") {
            guard (1...limits.maxSamples).contains(n) else { throw RequestFieldError(param: "n", "n must be between 1 and \(limits.maxSamples), got \(n)") }
            samples = n
        }
        // Completions: `logprobs` is a count of alternatives; chat: a boolean, with `top_logprobs`.
        switch kind {
        case .completion:
            if let k = try Self.int(json, "logprobs") {
                guard (0...limits.maxLogprobs).contains(k) else { throw RequestFieldError(param: "logprobs", "logprobs must be between 0 and \(limits.maxLogprobs), got \(k)") }
                logprobs = k
            }
        case .chat:
            let top = try Self.int(json, "top_logprobs")
            if let top, !(0...limits.maxLogprobs).contains(top) {
                throw RequestFieldError(param: "top_logprobs", "top_logprobs must be between 0 and \(limits.maxLogprobs), got \(top)")
            }
            if try Self.bool(json, "logprobs") == true { logprobs = top ?? 0 }
        }
        if let priority = try Self.int(json, "priority") { self.priority = priority }
        stream = try Self.bool(json, "stream") ?? false
        if let options = json["stream_options"], !(options is NSNull) {
            guard let o = options as? [String: Any] else { throw RequestFieldError(param: "stream_options", "stream_options must be an object") }
            includeUsage = try Self.bool(o, "include_usage") ?? false
        }
        if let value = json["resume_token_ids"], !(value is NSNull) {
            guard let list = value as? [Any], list.allSatisfy({ $0 is Int && !Self.isBoolean($0) }) else {
                throw RequestFieldError(param: "resume_token_ids", "resume_token_ids must be an array of token ids")
            }
            guard samples == 1, prompts.count == 1, !echo, tools.isEmpty else {
                throw RequestFieldError(param: "resume_token_ids", "resume_token_ids continues one generation: one prompt, n 1, no echo, no tools")
            }
            resumeTokens = list as! [Int]
        }
    }

    /// The engine requests, one per prompt: prompts tokenized (a text prompt as `apus run`
    /// does it, special tokens parsed; messages through the chat template), checked against
    /// the context, with `max_tokens` defaulting to what the context leaves.
    public func generationRequests(tokenizer: Tokenizer, chatTemplate: () throws -> ChatTemplate, contextLength: Int) throws -> [GenerationRequest] {
        let param = kind == .chat ? "messages" : "prompt"
        // A text of n bytes is at least n / longestTokenBytes tokens: one that cannot fit even
        // with a one-token completion is refused before the tokenizer spends seconds on it.
        func bounded(_ text: String) throws -> String {
            let bytes = text.utf8.count, least = (bytes + tokenizer.vocabulary.longestTokenBytes - 1) / tokenizer.vocabulary.longestTokenBytes
            guard least < contextLength else {
                throw RequestFieldError(
                    param: param,
                    "This model's maximum context length is \(contextLength) tokens. However, the \(param == "prompt" ? "prompt takes" : "messages take") \(bytes) bytes, which is at least \(least) tokens. Please reduce the length of the \(param).",
                    code: "context_length_exceeded")
            }
            return text
        }
        return try prompts.map { prompt in
            let ids: [Int]
            switch prompt {
            case .text(let text): ids = tokenizer.encode(try bounded(text), parseSpecial: true)
            case .tokens(let tokens): ids = tokens
            case .messages(let messages):
                let text = try chatTemplate().render(messages, tools: tools.isEmpty ? nil : tools.map(\.templateValue), tokenizer: tokenizer,
                                                     arguments: chatTemplateArguments)
                ids = tokenizer.encode(try bounded(text), parseSpecial: true, addSpecial: false)
            }
            guard !ids.isEmpty else { throw RequestFieldError(param: param, "the prompt is empty") }
            for t in ids where t < 0 || t >= tokenizer.vocabulary.count {
                throw RequestFieldError(param: param, "token id \(t) is outside the vocabulary of \(tokenizer.vocabulary.count) tokens")
            }
            let completion = maxTokens ?? max(0, contextLength - ids.count)
            guard ids.count + max(completion, 1) <= contextLength else {
                throw RequestFieldError(
                    param: param,
                    "This model's maximum context length is \(contextLength) tokens. However, you requested \(ids.count + completion) tokens (\(ids.count) in the \(kind == .chat ? "messages" : "prompt"), \(completion) in the completion). Please reduce the length of the \(kind == .chat ? "messages" : "prompt") or completion.",
                    code: "context_length_exceeded")
            }
            if let bad = parameters.sampling.logitBias.keys.first(where: { $0 >= tokenizer.vocabulary.count }) {
                throw RequestFieldError(param: "logit_bias", "token id \(bad) is outside the vocabulary of \(tokenizer.vocabulary.count) tokens")
            }
            var request = GenerationRequest(prompt: ids, parameters: parameters)
            request.parameters.maxTokens = completion
            if usesTools {
                guard let format = ToolCallFormat(template: try chatTemplate()) else {
                    throw RequestFieldError(param: "tools", "this model's chat template writes tool calls in no format Apus reads (it reads \(ToolCallFormat.known))")
                }
                request.parameters.constraint = try format.constraint(tools: tools, choice: toolChoice, parallel: parallelToolCalls)
                request.parameters.shownControlTokens = format.markerTokens(tokenizer)
            }
            request.samples = samples
            request.logprobs = logprobs
            // An echo of the prompt alone is a scoring request too: the engine runs the prompt.
            request.promptLogprobs = scoredPromptLogprobs ?? (completion == 0 ? 0 : nil)
            request.priority = priority
            request.resumedTokens = resumeTokens ?? []
            return request
        }
    }

    /// A completion's `prompt` (or an embedding request's `input`, named by `param`): a
    /// string, token ids, or a list of either, at most `maxPrompts` of them.
    static func prompts(_ value: Any?, maxPrompts: Int, param: String = "prompt") throws -> [Prompt] {
        func isTokens(_ list: [Any]) -> Bool { list.allSatisfy { $0 is Int && !isBoolean($0) } }
        guard let value, !(value is NSNull) else { throw RequestFieldError(param: param, "the request needs \(param == "prompt" ? "a prompt" : "`\(param)`")") }
        if let text = value as? String { return [.text(text)] }
        guard let list = value as? [Any], !list.isEmpty else {
            throw RequestFieldError(param: param, "\(param) must be a string, an array of strings, or token ids")
        }
        if isTokens(list) { return [.tokens(list as! [Int])] }
        guard list.count <= maxPrompts else { throw RequestFieldError(param: param, "at most \(maxPrompts) \(param == "prompt" ? "prompts" : "inputs") per request, got \(list.count)") }
        return try list.map { item in
            if let text = item as? String { return .text(text) }
            if let ids = item as? [Any], isTokens(ids) { return .tokens(ids as! [Int]) }
            throw RequestFieldError(param: param, "\(param) must be a string, an array of strings, or token ids")
        }
    }

    /// OpenAI's roles (`developer` is read as `system`).
    static let messageRoles = ["system", "developer", "user", "assistant", "tool"]

    /// A chat message: `role` and `content`; an assistant's `tool_calls` (content may then
    /// be null); a tool's `tool_call_id`; an optional `name`.
    private static func message(_ m: [String: Any], at i: Int) throws -> ChatMessage {
        guard let role = m["role"] as? String else { throw RequestFieldError(param: "messages[\(i)].role", "messages[\(i)].role must be a string") }
        guard messageRoles.contains(role) else {
            throw RequestFieldError(param: "messages[\(i)].role", "messages[\(i)].role must be one of \(messageRoles.joined(separator: ", ")), not '\(role.prefix(40))'")
        }
        var calls: [ChatMessage.ToolCall] = []
        if let list = m["tool_calls"], !(list is NSNull) {
            guard role == "assistant", let items = list as? [Any] else {
                throw RequestFieldError(param: "messages[\(i)].tool_calls", "messages[\(i)].tool_calls must be an array, on an assistant message")
            }
            calls = try items.enumerated().map { k, item in
                let where_ = "messages[\(i)].tool_calls[\(k)]"
                guard let c = item as? [String: Any], let f = c["function"] as? [String: Any], let name = f["name"] as? String else {
                    throw RequestFieldError(param: where_, "\(where_) must be {\"type\": \"function\", \"function\": {\"name\", \"arguments\"}}")
                }
                let arguments: String
                switch f["arguments"] {
                case let s as String: arguments = s
                case nil, is NSNull: arguments = "{}"
                case let v?: arguments = TemplateValue(json: v).json(indent: nil)
                }
                return ChatMessage.ToolCall(id: c["id"] as? String, name: name, arguments: arguments)
            }
        }
        let raw = m["content"]
        let content: String? = (raw == nil || raw is NSNull) && !calls.isEmpty ? nil : try Self.content(raw, at: i)
        var toolCallID: String? = nil
        if role == "tool" {
            guard let id = m["tool_call_id"] as? String else {
                throw RequestFieldError(param: "messages[\(i)].tool_call_id", "messages[\(i)].tool_call_id must be the id of the call a tool message answers")
            }
            toolCallID = id
        }
        return ChatMessage(role: role == "developer" ? "system" : role, content: content, name: m["name"] as? String, toolCalls: calls, toolCallID: toolCallID)
    }

    /// `tools`, `tool_choice` and `parallel_tool_calls`.
    private mutating func parseTools(_ json: [String: Any], ordered: TemplateValue?) throws {
        if let list = json["tools"], !(list is NSNull) {
            guard let items = list as? [Any] else { throw RequestFieldError(param: "tools", "tools must be an array of function definitions") }
            guard items.count <= 128 else { throw RequestFieldError(param: "tools", "at most 128 tools, got \(items.count)") }
            let orderedTools: [TemplateValue]? = ordered.flatMap { OutputFormat.subtree($0, ["tools"]) }.flatMap { if case .array(let a) = $0 { a } else { nil } }
            tools = try items.enumerated().map { i, item in
                guard let t = item as? [String: Any], t["type"] as? String == "function", let f = t["function"] as? [String: Any] else {
                    throw RequestFieldError(param: "tools[\(i)]", "tools[\(i)] must be {\"type\": \"function\", \"function\": {\"name\", \"parameters\"}}")
                }
                guard let name = f["name"] as? String, !name.isEmpty, name.count <= 64,
                      name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) else {
                    throw RequestFieldError(param: "tools[\(i)].function.name", "tools[\(i)].function.name must be 1 to 64 letters, digits, underscores or dashes")
                }
                let value = orderedTools.flatMap { i < $0.count ? $0[i] : nil } ?? TemplateValue(json: t)
                let parameters = f["parameters"].flatMap { $0 is NSNull ? nil : $0 }
                let schema = try parameters.map { try OutputFormat.schemaText($0, path: ["tools"], ordered: nil, subtree: OutputFormat.subtree(value, ["function", "parameters"])) }
                return ToolDefinition(name: name, parameters: schema ?? #"{"type": "object", "properties": {}}"#, templateValue: value)
            }
            guard Set(tools.map(\.name)).count == tools.count else { throw RequestFieldError(param: "tools", "tool names must be unique") }
            toolChoice = tools.isEmpty ? .none : .auto
        }
        if let choice = json["tool_choice"], !(choice is NSNull) {
            switch choice {
            case let s as String:
                switch s {
                case "none": toolChoice = .none
                case "auto": toolChoice = tools.isEmpty ? .none : .auto
                case "required":
                    guard !tools.isEmpty else { throw RequestFieldError(param: "tool_choice", "tool_choice required needs tools") }
                    toolChoice = .required
                default: throw RequestFieldError(param: "tool_choice", "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\"}}, got \(s)")
                }
            case let d as [String: Any]:
                guard let f = d["function"] as? [String: Any], let name = f["name"] as? String else {
                    throw RequestFieldError(param: "tool_choice", "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\"}}")
                }
                guard tools.contains(where: { $0.name == name }) else { throw RequestFieldError(param: "tool_choice", "tool_choice names \(name), which is not among the tools") }
                toolChoice = .function(name)
            default:
                throw RequestFieldError(param: "tool_choice", "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\"}}")
            }
        }
        if let p = try Self.bool(json, "parallel_tool_calls") { parallelToolCalls = p }
    }

    /// The variables the request sets are the template's own, never the conversation it is
    /// given: those are other fields of the request.
    static let reservedTemplateArguments = ["messages", "tools", "add_generation_prompt"]

    private static func templateArguments(_ json: [String: Any]) throws -> [String: TemplateValue] {
        guard let value = json["chat_template_kwargs"], !(value is NSNull) else { return [:] }
        guard let object = value as? [String: Any] else {
            throw RequestFieldError(param: "chat_template_kwargs", "chat_template_kwargs must be an object of template variables")
        }
        if let key = object.keys.sorted().first(where: reservedTemplateArguments.contains) {
            throw RequestFieldError(param: "chat_template_kwargs", "chat_template_kwargs cannot set `\(key)`; it comes from the request's own fields")
        }
        return object.mapValues { TemplateValue(json: $0) }
    }

    private static func content(_ value: Any?, at i: Int) throws -> String {
        if let s = value as? String { return s }
        if value == nil || value is NSNull { return "" }
        if let parts = value as? [[String: Any]] {
            return try parts.map { part in
                guard part["type"] as? String == "text", let text = part["text"] as? String else {
                    throw RequestFieldError(param: "messages[\(i)].content", "only text content parts are supported")
                }
                return text
            }.joined()
        }
        throw RequestFieldError(param: "messages[\(i)].content", "messages[\(i)].content must be a string or an array of text parts")
    }

    /// JSONSerialization gives booleans as NSNumbers that also cast to Int; their type code tells.
    static func isBoolean(_ value: Any) -> Bool {
        guard let n = value as? NSNumber else { return false }
        return String(cString: n.objCType) == "c"
    }

    static func string(_ json: [String: Any], _ key: String) throws -> String? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard let s = v as? String else { throw RequestFieldError(param: key, "\(key) must be a string") }
        return s
    }

    static func bool(_ json: [String: Any], _ key: String) throws -> Bool? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard isBoolean(v), let b = v as? Bool else { throw RequestFieldError(param: key, "\(key) must be a boolean") }
        return b
    }

    /// A JSON number field (not a boolean); nil when absent or null.
    static func number(_ json: [String: Any], _ key: String) throws -> Double? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard let n = v as? NSNumber, !isBoolean(n), n.doubleValue.isFinite else {
            throw RequestFieldError(param: key, "\(key) must be a number")
        }
        return n.doubleValue
    }

    /// A JSON integer field; nil when absent or null.
    static func int(_ json: [String: Any], _ key: String) throws -> Int? {
        guard let v = try number(json, key) else { return nil }
        guard v == v.rounded(), abs(v) < 9.2e18 else { throw RequestFieldError(param: key, "\(key) must be an integer") }
        return Int(v)
    }
}
