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
/// that makes it write them validly and the parser that reads them back. A template that
/// calls tools some other way is refused by name rather than parsed wrongly.
public enum ToolCallFormat: Sendable {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`: Qwen2.5, Hermes and many
    /// fine-tunes.
    case hermes
    /// `{"name": ..., "parameters": {...}}` as the whole reply, perhaps after
    /// `<|python_tag|>`: Llama 3.1–3.3's JSON tool calling. One call per reply, as Meta's
    /// templates refuse more than one in the history.
    case llama3
    /// `[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": "a1b2c3d4e"}, ...]`: Mistral 7B
    /// v0.3 and Nemo, whose templates require ids of nine letters and digits.
    case mistral
    /// `[TOOL_CALLS]name[ARGS]{...}` per call, perhaps with `[CALL_ID]a1b2c3d4e` before
    /// `[ARGS]`: Mistral's later models (Mistral Small 3.2, Devstral, Ministral 3).
    case mistralArgs

    /// Where a call is written: after `open`, up to `close` (nil: to the end of the output).
    struct Block {
        let open: String
        let close: String?
        /// Only as the whole output (a fenced JSON example inside an answer is not a call).
        let onlyAtStart: Bool
    }

    /// The template's marks of this format. Hermes first: Hermes fine-tunes of Llama 3 keep
    /// Llama's headers.
    public init?(template: ChatTemplate) {
        let s = template.source
        if s.contains("<tool_call>") {
            self = .hermes
        } else if s.contains("[TOOL_CALLS]") {
            self = s.contains("[ARGS]") ? .mistralArgs : .mistral
        } else if s.contains("<|start_header_id|>ipython<|end_header_id|>") {
            self = .llama3
        } else {
            return nil
        }
    }

    /// What the 400 for a template of no known format says Apus reads.
    public static let known = "Hermes <tool_call> blocks, Llama 3 JSON calls and Mistral [TOOL_CALLS] calls"

    var blocks: [Block] {
        switch self {
        // A fenced JSON block: small Qwen models write one when they do not use the tags
        // (llama.cpp's Hermes parser takes both).
        case .hermes: [Block(open: "<tool_call>", close: "</tool_call>", onlyAtStart: false), Block(open: "```json", close: "```", onlyAtStart: true)]
        case .llama3: [Block(open: "<|python_tag|>", close: nil, onlyAtStart: false)]
        case .mistral, .mistralArgs: [Block(open: "[TOOL_CALLS]", close: nil, onlyAtStart: false)]
        }
    }

    /// Whether ids must be Mistral's nine letters and digits.
    var mistralIDs: Bool { self == .mistral || self == .mistralArgs }

    /// Whether a whole output that is bare JSON (no tags) may be calls.
    var readsBareJSON: Bool { !mistralIDs }
    /// How a bare call begins.
    static let bareOpener = #"{"name""#

    /// The texts of the format's marks, which the output must show even where the
    /// vocabulary has them as control tokens (Llama 3's `<|python_tag|>`, Mistral's
    /// `[TOOL_CALLS]`), so that the parser sees them and the grammar may write them.
    public var markers: [String] {
        let marks = blocks.flatMap { [$0.open] + ($0.close.map { [$0] } ?? []) }.filter { !$0.hasPrefix("```") }
        return marks + (self == .mistralArgs ? ["[ARGS]", "[CALL_ID]"] : [])
    }

    /// The marks that are control tokens of `tokenizer`'s vocabulary (others show anyway).
    public func markerTokens(_ tokenizer: Tokenizer) -> Set<Int> {
        let v = tokenizer.vocabulary
        return Set(markers.compactMap { v.id(of: $0) }.filter { v.types[$0] == .control || v.types[$0] == .unknown })
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
        let argumentsKey = self == .llama3 ? "parameters" : "arguments"
        // Mistral's models write the call's id after its arguments.
        let id = self == .mistral ? #" ("," space "\"id\"" space ":" space "\"" [a-zA-Z0-9]{9} "\"")?"# : ""
        let bodies = allowed.enumerated().map { i, tool in
            GBNFText.literal("\"" + tool.name + "\"") + #" space "," space "\"\#(argumentsKey)\"" space ":" space tool-\#(i)-arguments"# + id
        }
        var rules: [(name: String, body: String)] = [
            ("call-json", #""{" space "\"name\"" space ":" space ("# + bodies.joined(separator: " | ") + #") "}" space"#),
        ]
        let root: String
        switch self {
        case .hermes:
            let more = parallel ? " (space call)*" : ""
            rules.append(("call", #""<tool_call>" space call-json "</tool_call>""#))
            if choice == .auto {
                // From the opener the model chose on: this call, then perhaps more.
                let bare = parallel ? " (space call-json)*" : ""
                rules.append(("root", "call" + more + #" | "```json" space call-json "```" space | call-json"# + bare))
                return .triggered(triggers: ["<tool_call>"], atStart: ["```json", Self.bareOpener],
                                  grammar: try JSONSchemaGrammar.gbnf(schemas: schemas, rules: rules))
            }
            root = "call" + more
        case .llama3:
            root = #""<|python_tag|>"? call-json"#
            if choice == .auto {
                rules.append(("root", root))
                return .triggered(triggers: ["<|python_tag|>"], atStart: [Self.bareOpener], grammar: try JSONSchemaGrammar.gbnf(schemas: schemas, rules: rules))
            }
        case .mistral:
            root = #""[TOOL_CALLS]" "[" space call-json"# + (parallel ? #" ("," space call-json)*"# : "") + #" "]""#
            if choice == .auto {
                rules.append(("root", root))
                return .triggered(triggers: ["[TOOL_CALLS]"], atStart: [], grammar: try JSONSchemaGrammar.gbnf(schemas: schemas, rules: rules))
            }
        case .mistralArgs:
            // Not JSON around the arguments: the name, perhaps the model's own id, then them.
            let calls = allowed.enumerated().map { i, tool in
                GBNFText.literal(tool.name) + #" ("[CALL_ID]" [a-zA-Z0-9]{9})? "[ARGS]" tool-\#(i)-arguments"#
            }
            rules = [("call", #""[TOOL_CALLS]" ("# + calls.joined(separator: " | ") + ")")]
            root = "call" + (parallel ? " (space call)*" : "")
            if choice == .auto {
                rules.append(("root", root))
                return .triggered(triggers: ["[TOOL_CALLS]"], atStart: [], grammar: try JSONSchemaGrammar.gbnf(schemas: schemas, rules: rules))
            }
        }
        rules.append(("root", root))
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

    /// The calls written in `text` (inside a block, or a bare output), each naming one of
    /// `tools`; nil unless all of it is calls. Mistral writes a JSON list; the others one
    /// call's JSON, or one per line (Llama 3 may separate them with `;`).
    func calls(in text: String, tools: Set<String>) -> [ParsedToolCall]? {
        let text = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if self == .mistralArgs {
            // `name[ARGS]{...}`, or `name[CALL_ID]id[ARGS]{...}`, separated by further markers.
            let parts = text.components(separatedBy: "[TOOL_CALLS]").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
            let calls = parts.compactMap { part -> ParsedToolCall? in
                guard let args = part.range(of: "[ARGS]") else { return nil }
                var name = String(part[..<args.lowerBound]), id: String? = nil
                if let marker = name.range(of: "[CALL_ID]") {
                    id = String(name[marker.upperBound...])
                    name = String(name[..<marker.lowerBound])
                }
                let arguments = String(part[args.upperBound...]).trimmingCharacters(in: .whitespacesAndNewlines)
                guard tools.contains(name), case .dict? = try? TemplateValue(parsingJSON: arguments) else { return nil }
                return ParsedToolCall(id: id.flatMap { Self.isMistralID($0) ? $0 : nil } ?? newID(), name: name, arguments: arguments)
            }
            return !calls.isEmpty && calls.count == parts.count ? calls : nil
        }
        if self == .mistral {
            switch try? TemplateValue(parsingJSON: text) {
            case .array(let items)?:
                let calls = items.compactMap { call($0, tools: tools) }
                return !calls.isEmpty && calls.count == items.count ? calls : nil
            case let v?: return call(v, tools: tools).map { [$0] }
            case nil: return nil
            }
        }
        if let c = (try? TemplateValue(parsingJSON: text)).flatMap({ call($0, tools: tools) }) { return [c] }
        let separators: Set<Character> = self == .llama3 ? ["\n", ";"] : ["\n"]
        let parts = text.split(whereSeparator: { separators.contains($0) }).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let calls = parts.compactMap { (try? TemplateValue(parsingJSON: $0)).flatMap { call($0, tools: tools) } }
        return !calls.isEmpty && calls.count == parts.count ? calls : nil
    }

    /// One call, `{"name": ..., "arguments" or "parameters": {...}}` naming one of `tools`.
    private func call(_ value: TemplateValue, tools: Set<String>) -> ParsedToolCall? {
        guard case .dict(let pairs) = value, case .string(let name)? = pairs.first(where: { $0.0 == "name" })?.1, tools.contains(name) else { return nil }
        let arguments: String
        switch pairs.first(where: { $0.0 == "arguments" || $0.0 == "parameters" })?.1 {
        case .string(let s)?: arguments = s
        case let v?: arguments = v.json(indent: nil)
        case nil: arguments = "{}"
        }
        var id = newID()
        if self == .mistral, case .string(let own)? = pairs.first(where: { $0.0 == "id" })?.1, Self.isMistralID(own) { id = own }
        return ParsedToolCall(id: id, name: name, arguments: arguments)
    }

    /// A new call id as the family's templates accept it back in the history: Mistral's
    /// nine letters and digits, else OpenAI's `call_` and 24.
    func newID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        let n = mistralIDs ? 9 : 24
        let random = String((0..<n).map { _ in alphabet.randomElement()! })
        return mistralIDs ? random : "call_" + random
    }

    static func isMistralID(_ s: String) -> Bool {
        s.utf8.count == 9 && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) }
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
    /// The block being read.
    private var inCall: ToolCallFormat.Block?
    private(set) var calls = 0

    init(format: ToolCallFormat, tools: Set<String>) {
        self.format = format
        self.tools = tools
    }

    mutating func feed(_ text: String) -> [Piece] {
        buffer += text
        if holding { return [] }
        if format.readsBareJSON, !sentContent, calls == 0, inCall == nil {
            let start = buffer.drop { $0.isWhitespace }
            if start.isEmpty { return [] }
            if start.first == "{" { holding = true; return [] }
        }
        var out: [Piece] = []
        defer { if out.contains(where: { if case .content = $0 { true } else { false } }) { sentContent = true } }
        while true {
            if let block = inCall {
                // A block open to the end of the output is read when it ends.
                guard let close = block.close, let end = buffer.range(of: close) else { break }
                out += pieces(String(buffer[..<end.lowerBound]), block)
                buffer = String(buffer[end.upperBound...])
                inCall = nil
            } else if let (start, block) = format.blocks.compactMap({ b -> (Range<String.Index>, ToolCallFormat.Block)? in
                            guard let r = buffer.range(of: b.open) else { return nil }
                            if b.onlyAtStart, sentContent || calls > 0 || !buffer[..<r.lowerBound].allSatisfy(\.isWhitespace) { return nil }
                            return (r, b)
                        }).min(by: { $0.0.lowerBound < $1.0.lowerBound }) {
                let before = String(buffer[..<start.lowerBound])
                if !before.isEmpty { out.append(.content(before)) }
                buffer = String(buffer[start.upperBound...])
                inCall = block
            } else {
                // Hold back the longest end of the buffer that could begin an opener.
                var keep = 0
                for b in format.blocks {
                    for n in stride(from: min(buffer.count, b.open.count - 1), through: 1, by: -1) where b.open.hasPrefix(buffer.suffix(n)) {
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
            if let each = format.calls(in: buffer, tools: tools) {
                calls += each.count
                return each.map { .call($0) }
            }
            return [.content(buffer)]
        }
        if let block = inCall {
            inCall = nil
            return pieces(buffer, block)
        }
        return buffer.isEmpty ? [] : [.content(buffer)]
    }

    /// A block's inside as calls, or, when it is not calls, as the text it was.
    private mutating func pieces(_ inside: String, _ block: ToolCallFormat.Block) -> [Piece] {
        if let each = format.calls(in: inside, tools: tools) {
            calls += each.count
            return each.map { .call($0) }
        }
        return [.content(block.open + inside + (block.close ?? ""))]
    }
}
