import GGUF

/// A chat template (`tokenizer.chat_template`) rendered by a sandboxed interpreter of the
/// Jinja subset that GGUF chat templates use.
public struct ChatTemplate: Sendable {
    /// Bounds on what one rendering may do.
    public struct Limits: Sendable {
        public var maximumIterations = 100_000
        public var maximumOutputBytes = 4 << 20
        public var maximumCallDepth = 32
        public init() {}
    }

    public let source: String
    public var limits: Limits
    private let body: [Statement]

    /// Parses `source`; a construct outside the supported subset is an error naming it.
    public init(_ source: String, limits: Limits = Limits()) throws {
        guard source.utf8.count <= 1 << 20 else { throw TemplateError("template source is larger than 1 MiB") }
        self.source = source
        self.limits = limits
        self.body = try TemplateParser.parse(source)
    }

    /// The model's own template, or nil when the file has none.
    public init?(metadata: GGUFMetadata) throws {
        guard let source = try metadata.optionalString("tokenizer.chat_template") else { return nil }
        try self.init(source)
    }

    /// Renders `messages` (each a dict with at least `role` and `content`) and, when given,
    /// `tools` (the function definitions as OpenAI's API sends them, each
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`); without
    /// tools, `tools` is undefined to the template, as when Hugging Face passes none.
    public func render(messages: [TemplateValue], tools: [TemplateValue]? = nil, addGenerationPrompt: Bool = true,
                       extra: [String: TemplateValue] = [:]) throws -> String {
        var globals = extra
        globals["messages"] = .array(messages)
        if let tools { globals["tools"] = .array(tools) }
        globals["add_generation_prompt"] = .bool(addGenerationPrompt)
        if globals["bos_token"] == nil { globals["bos_token"] = .string("") }
        if globals["eos_token"] == nil { globals["eos_token"] = .string("") }
        return try TemplateInterpreter(globals: globals, limits: limits).render(body)
    }

    /// Renders a conversation, with the model's BOS and EOS texts available to the template
    /// as `bos_token` and `eos_token`, and `arguments` as further variables (a request's
    /// `enable_thinking`). Tool-call arguments are passed parsed when the template prints
    /// them as JSON itself (`takesObjectArguments`), as llama.cpp does.
    public func render(_ messages: [ChatMessage], tools: [TemplateValue]? = nil, tokenizer: Tokenizer,
                       addGenerationPrompt: Bool = true, arguments: [String: TemplateValue] = [:]) throws -> String {
        let v = tokenizer.vocabulary
        let objectArguments = messages.contains { !$0.toolCalls.isEmpty } && takesObjectArguments
        var extra = arguments
        extra["bos_token"] = extra["bos_token"] ?? .string(v.bos.map { v.tokens[$0] } ?? "")
        extra["eos_token"] = extra["eos_token"] ?? .string(v.eos.map { v.tokens[$0] } ?? "")
        return try render(messages: messages.map { $0.templateValue(objectArguments: objectArguments) }, tools: tools,
                          addGenerationPrompt: addGenerationPrompt, extra: extra)
    }

    /// Renders role/content pairs, with the model's BOS and EOS texts available to the
    /// template as `bos_token` and `eos_token`.
    public func render(_ messages: [(role: String, content: String)], tokenizer: Tokenizer, addGenerationPrompt: Bool = true) throws -> String {
        try render(messages.map { ChatMessage(role: $0.role, content: $0.content) }, tokenizer: tokenizer, addGenerationPrompt: addGenerationPrompt)
    }

    /// Whether the template prints a tool call's `arguments` as JSON itself (with `tojson`),
    /// so that it wants them as an object rather than as OpenAI's JSON text: llama.cpp's
    /// `supports_object_arguments`, found the same way, by rendering a probe call with
    /// object arguments and looking for their key, JSON-quoted, in the output.
    public var takesObjectArguments: Bool {
        let probeKey = "apus_probe_argument"
        let call: TemplateValue = .dict([
            // Nine letters, as Mistral's templates require of an id.
            ("id", .string("probecall")), ("type", .string("function")),
            ("function", .dict([("name", .string("probe_tool")), ("arguments", .dict([(probeKey, .string("value"))]))])),
        ])
        let tool: TemplateValue = .dict([
            ("type", .string("function")),
            ("function", .dict([
                ("name", .string("probe_tool")), ("description", .string("")),
                ("parameters", .dict([("type", .string("object")), ("properties", .dict([(probeKey, .dict([("type", .string("string"))]))]))])),
            ])),
        ])
        let messages: [TemplateValue] = [
            .message(role: "user", content: "User message"),
            .dict([("role", .string("assistant")), ("content", .string("")), ("tool_calls", .array([call]))]),
        ]
        guard let out = try? render(messages: messages, tools: [tool], addGenerationPrompt: false) else { return false }
        // The tool definition may print the key too; only the call's arguments put a value beside it.
        return out.contains("\"\(probeKey)\": \"value\"")
    }
}
