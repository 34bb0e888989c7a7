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

    /// Renders `messages` (each a dict with at least `role` and `content`).
    public func render(messages: [TemplateValue], addGenerationPrompt: Bool = true,
                       extra: [String: TemplateValue] = [:]) throws -> String {
        var globals = extra
        globals["messages"] = .array(messages)
        globals["add_generation_prompt"] = .bool(addGenerationPrompt)
        if globals["bos_token"] == nil { globals["bos_token"] = .string("") }
        if globals["eos_token"] == nil { globals["eos_token"] = .string("") }
        return try TemplateInterpreter(globals: globals, limits: limits).render(body)
    }

    /// Renders role/content pairs, with the model's BOS and EOS texts available to the
    /// template as `bos_token` and `eos_token`.
    public func render(_ messages: [(role: String, content: String)], tokenizer: Tokenizer, addGenerationPrompt: Bool = true) throws -> String {
        let v = tokenizer.vocabulary
        return try render(messages: messages.map { .message(role: $0.role, content: $0.content) }, addGenerationPrompt: addGenerationPrompt,
                          extra: ["bos_token": .string(v.bos.map { v.tokens[$0] } ?? ""), "eos_token": .string(v.eos.map { v.tokens[$0] } ?? "")])
    }
}
