import Engine
import Foundation
import Tokenizer

/// A function the model may call, as OpenAI's `tools` define it.
public struct ToolDefinition: Sendable, Equatable {
    public let name: String
    /// The JSON schema of the arguments, as JSON text in the client's key order.
    public let parameters: String
    /// The whole definition for the chat template (`{"type": "function", "function": {...}}`).
    public let templateValue: TemplateValue
}

/// OpenAI's `tool_choice`.
public enum ToolChoice: Sendable, Equatable {
    case none, auto, required
    case function(String)
}

/// A call the model made, with OpenAI's fields.
public struct ParsedToolCall: Sendable, Equatable {
    public let id: String
    public let name: String
    /// The arguments as JSON text.
    public let arguments: String
}

/// How a model family writes tool calls, chosen from its chat template, with the grammar
/// that makes it write them validly and the parser that reads them back. Hermes-style
/// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen2.5, Hermes, many
/// fine-tunes) is the one known so far; a template that calls tools some other way is
/// refused by name rather than parsed wrongly.
public enum ToolCallFormat: Sendable {
    case hermes

    /// Each way a call is written: Hermes tags, and a fenced JSON block, which small Qwen
    /// models write when they do not use the tags (llama.cpp's Hermes parser takes both).
    static let delimiters: [(open: String, close: String)] = [("<tool_call>", "</tool_call>"), ("```json", "```")]
    /// How a bare call (no tags, no fence: the whole output is the call's JSON) begins.
    static let bareOpener = #"{"name""#
    static let open = "<tool_call>"

    public init?(template: ChatTemplate) {
        guard template.source.contains(Self.open) else { return nil }
        self = .hermes
    }

    /// The constraint for a request with tools: `required` or a named function from the
    /// first token; `auto` once the model opens a call (it may also just answer).
    func constraint(tools: [ToolDefinition], choice: ToolChoice, parallel: Bool) throws -> OutputConstraint? {
        let allowed: [ToolDefinition]
        switch choice {
        case .none: return nil
        case .auto, .required: allowed = tools
        case .function(let name): allowed = tools.filter { $0.name == name }
        }
        let schemas = allowed.enumerated().map { (rule: "tool-\($0.offset)-arguments", schema: $0.element.parameters) }
        let bodies = allowed.enumerated().map { i, tool in
            GBNFText.literal("\"" + tool.name + "\"") + #" space "," space "\"arguments\"" space ":" space tool-\#(i)-arguments"#
        }
        let more = parallel ? " (space call)*" : ""
        var rules: [(name: String, body: String)] = [
            ("call-json", #""{" space "\"name\"" space ":" space ("# + bodies.joined(separator: " | ") + #") "}" space"#),
            ("call", #""<tool_call>" space call-json "</tool_call>""#),
        ]
        if choice == .auto {
            // From the opener the model chose on: this call, then perhaps more.
            let bare = parallel ? " (space call-json)*" : ""
            rules.append(("root", "call" + more + #" | "```json" space call-json "```" space | call-json"# + bare))
            // The tags may open a call anywhere; a fence or bare JSON only as the whole output
            // (a JSON example in an answer is not a call).
            return .triggered(triggers: [Self.open], atStart: [Self.delimiters[1].open, Self.bareOpener],
                              grammar: try JSONSchemaGrammar.gbnf(schemas: schemas, rules: rules))
        }
        rules.append(("root", "call" + more))
        return .grammar(try JSONSchemaGrammar.gbnf(schemas: schemas, rules: rules))
    }

    /// OpenAI's finish reason for an output that made `calls` tool calls: `tool_calls` when
    /// it stopped on its own after at least one, else the engine's reason.
    public static func finishReason(_ reason: FinishReason, calls: Int) -> String {
        reason == .stop && calls > 0 ? "tool_calls" : reason.rawValue
    }

    /// The calls in a whole output, and the text around them (nil when there is none).
    public func parse(_ text: String, tools: Set<String>) -> (content: String?, calls: [ParsedToolCall]) {
        var splitter = ToolCallSplitter(format: self, tools: tools)
        let pieces = splitter.feed(text) + splitter.finish()
        var content = "", calls: [ParsedToolCall] = []
        for p in pieces {
            switch p {
            case .content(let s): content += s
            case .call(let c): calls.append(c)
            }
        }
        if calls.isEmpty { return (content, []) }
        let trimmed = content.trimmingCharacters(in: .whitespacesAndNewlines)
        return (trimmed.isEmpty ? nil : trimmed, calls)
    }

    /// One call's JSON, `{"name": ..., "arguments": {...}}` naming one of `tools`; nil when
    /// it is not one.
    func call(_ json: String, tools: Set<String>) -> ParsedToolCall? {
        guard case .dict(let pairs)? = try? TemplateValue(parsingJSON: json.trimmingCharacters(in: .whitespacesAndNewlines)),
              case .string(let name)? = pairs.first(where: { $0.0 == "name" })?.1, tools.contains(name) else { return nil }
        let arguments: String
        switch pairs.first(where: { $0.0 == "arguments" || $0.0 == "parameters" })?.1 {
        case .string(let s)?: arguments = s
        case let v?: arguments = v.json(indent: nil)
        case nil: arguments = "{}"
        }
        return ParsedToolCall(id: Self.newID(), name: name, arguments: arguments)
    }

    static func newID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        return "call_" + String((0..<24).map { _ in alphabet.randomElement()! })
    }
}

/// Splits streamed output into content and completed calls as it arrives: text that might
/// be the start of a call is held back until it is known not to be.
struct ToolCallSplitter {
    enum Piece: Equatable {
        case content(String)
        case call(ParsedToolCall)
    }

    let format: ToolCallFormat
    let tools: Set<String>
    private var buffer = ""
    /// Output that began with `{`: held whole, read at the end as bare calls or content.
    private var holding = false
    private var sentContent = false
    /// The delimiters of the block being read.
    private var inCall: (open: String, close: String)?
    private(set) var calls = 0

    init(format: ToolCallFormat, tools: Set<String>) {
        self.format = format
        self.tools = tools
    }

    mutating func feed(_ text: String) -> [Piece] {
        buffer += text
        if holding { return [] }
        if !sentContent, calls == 0, inCall == nil {
            let start = buffer.drop { $0.isWhitespace }
            if start.isEmpty { return [] }
            if start.first == "{" { holding = true; return [] }
        }
        var out: [Piece] = []
        defer { if out.contains(where: { if case .content = $0 { true } else { false } }) { sentContent = true } }
        while true {
            if let block = inCall {
                guard let end = buffer.range(of: block.close) else { break }
                out.append(piece(String(buffer[..<end.lowerBound]), block))
                buffer = String(buffer[end.upperBound...])
                inCall = nil
            } else if let (start, block) = ToolCallFormat.delimiters.enumerated().compactMap({ k, d -> (Range<String.Index>, (open: String, close: String))? in
                            guard let r = buffer.range(of: d.open) else { return nil }
                            // A fence is a call only as the whole output, as the grammar has it.
                            if k > 0, sentContent || calls > 0 || !buffer[..<r.lowerBound].allSatisfy(\.isWhitespace) { return nil }
                            return (r, d)
                        }).min(by: { $0.0.lowerBound < $1.0.lowerBound }) {
                let before = String(buffer[..<start.lowerBound])
                if !before.isEmpty { out.append(.content(before)) }
                buffer = String(buffer[start.upperBound...])
                inCall = block
            } else {
                // Hold back the longest end of the buffer that could begin an opener.
                var keep = 0
                for d in ToolCallFormat.delimiters {
                    for n in stride(from: min(buffer.count, d.open.count - 1), through: 1, by: -1) where d.open.hasPrefix(buffer.suffix(n)) {
                        keep = max(keep, n)
                        break
                    }
                }
                let ready = String(buffer.dropLast(keep))
                if !ready.isEmpty { out.append(.content(ready)) }
                buffer = String(buffer.suffix(keep))
                break
            }
        }
        return out
    }

    mutating func finish() -> [Piece] {
        defer { buffer = "" }
        if holding {
            holding = false
            // One call's JSON, or one per line; anything else is what the model said.
            let text = buffer.trimmingCharacters(in: .whitespacesAndNewlines)
            if let c = format.call(text, tools: tools) { calls += 1; return [.call(c)] }
            let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            let each = lines.compactMap { format.call($0, tools: tools) }
            if !each.isEmpty, each.count == lines.count { calls += each.count; return each.map { .call($0) } }
            return [.content(buffer)]
        }
        if let block = inCall {
            inCall = nil
            return [piece(buffer, block)]
        }
        return buffer.isEmpty ? [] : [.content(buffer)]
    }

    /// A block's inside as a call, or, when it is not one, as the text it was.
    private mutating func piece(_ inside: String, _ block: (open: String, close: String)) -> Piece {
        if let c = format.call(inside, tools: tools) {
            calls += 1
            return .call(c)
        }
        return .content(block.open + inside + block.close)
    }
}
