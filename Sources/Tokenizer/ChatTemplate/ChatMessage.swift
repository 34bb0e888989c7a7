/// One message of a conversation, with the fields OpenAI's chat API gives a message
/// (`role`, `content`, `name`, `tool_calls`, `tool_call_id`), as a chat template sees it.
public struct ChatMessage: Sendable, Equatable {
    /// A function call the assistant made.
    public struct ToolCall: Sendable, Equatable {
        public var id: String?
        public var name: String
        /// The arguments as JSON text, as OpenAI's API carries them.
        public var arguments: String

        public init(id: String? = nil, name: String, arguments: String) {
            self.id = id
            self.name = name
            self.arguments = arguments
        }
    }

    public var role: String
    /// Nil for an assistant message that only calls tools.
    public var content: String?
    public var name: String?
    public var toolCalls: [ToolCall]
    /// For a `tool` message: the call it answers.
    public var toolCallID: String?

    public init(role: String, content: String?, name: String? = nil, toolCalls: [ToolCall] = [], toolCallID: String? = nil) {
        self.role = role
        self.content = content
        self.name = name
        self.toolCalls = toolCalls
        self.toolCallID = toolCallID
    }

    /// The message as a template value, shaped as llama.cpp hands messages to a template:
    /// each call is `{"id", "type": "function", "function": {"name", "arguments"}}`; a
    /// message with calls but no content gets content `""` (`requires_non_null_content`);
    /// and with `objectArguments`, arguments that are valid JSON are passed parsed
    /// (`func_args_not_string`), for templates that print them with `tojson`. Fields that
    /// are not set are absent (undefined to the template).
    public func templateValue(objectArguments: Bool) -> TemplateValue {
        var pairs: [(String, TemplateValue)] = [("role", .string(role))]
        if let content { pairs.append(("content", .string(content))) } else { pairs.append(("content", toolCalls.isEmpty ? .none : .string(""))) }
        if let name { pairs.append(("name", .string(name))) }
        if !toolCalls.isEmpty {
            pairs.append(("tool_calls", .array(toolCalls.map { call in
                let arguments = objectArguments ? (try? TemplateValue(parsingJSON: call.arguments)) ?? .string(call.arguments) : .string(call.arguments)
                var fields: [(String, TemplateValue)] = []
                if let id = call.id { fields.append(("id", .string(id))) }
                fields.append(("type", .string("function")))
                fields.append(("function", .dict([("name", .string(call.name)), ("arguments", arguments)])))
                return .dict(fields)
            })))
        }
        if let toolCallID { pairs.append(("tool_call_id", .string(toolCallID))) }
        return .dict(pairs)
    }
}
