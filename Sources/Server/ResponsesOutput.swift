import Engine
import Foundation
import NIOCore

/// What the Responses API answers: a `response` object whose `output` holds a `message`
/// item for the text and a `function_call` item per tool call, whole or as its stream of
/// typed events.
/// `@unchecked Sendable`: the JSON values it holds are built once and only read.
struct ResponsesOutput: @unchecked Sendable {
    let id: String
    let created: Int
    let model: String
    /// The request's fields the object repeats, as the request sent them.
    let echoed: [String: Any]

    init(id: String, created: Int, model: String, request: ResponsesRequest) {
        self.id = "resp_" + id
        self.created = created
        self.model = model
        echoed = request.echoed
    }

    var messageID: String { "msg_" + id.dropFirst("resp_".count) }

    func callID(_ k: Int) -> String { "fc_\(id.dropFirst("resp_".count))_\(k)" }

    /// The response object. `status`: in_progress, completed, incomplete or failed.
    func object(status: String, output: [[String: Any]], reason: FinishReason? = nil, metrics: [RequestMetrics]? = nil, error: APIError? = nil) -> [String: Any] {
        var object: [String: Any] = [
            "id": id, "object": "response", "created_at": created, "model": model, "status": status, "output": output,
            "error": error.map { ["code": $0.code ?? $0.type, "message": $0.message] } ?? NSNull(),
            "incomplete_details": reason == .length ? ["reason": "max_output_tokens"] : NSNull(),
            "store": false, "background": false, "previous_response_id": NSNull(),
        ]
        for (key, value) in echoed { object[key] = value }
        if object["tool_choice"] is NSNull { object["tool_choice"] = "auto" }
        if object["tools"] is NSNull { object["tools"] = [Any]() }
        if object["text"] is NSNull { object["text"] = ["format": ["type": "text"]] }
        if object["truncation"] is NSNull { object["truncation"] = "disabled" }
        if object["metadata"] is NSNull { object["metadata"] = [String: Any]() }
        if object["parallel_tool_calls"] is NSNull { object["parallel_tool_calls"] = true }
        if object["temperature"] is NSNull { object["temperature"] = 1.0 }
        if object["top_p"] is NSNull { object["top_p"] = 1.0 }
        if let metrics {
            let input = metrics.reduce(0) { $0 + $1.promptTokens }, output = metrics.reduce(0) { $0 + $1.completionTokens }
            object["usage"] = ["input_tokens": input, "input_tokens_details": ["cached_tokens": metrics.reduce(0) { $0 + $1.cachedPromptTokens }],
                               "output_tokens": output, "output_tokens_details": ["reasoning_tokens": 0], "total_tokens": input + output]
        } else {
            object["usage"] = NSNull()
        }
        return object
    }

    /// The status a finished output has: incomplete when the token cap cut it.
    static func status(_ reason: FinishReason?) -> String { reason == .length ? "incomplete" : "completed" }

    func message(_ text: String, status: String) -> [String: Any] {
        ["type": "message", "id": messageID, "status": status, "role": "assistant",
         "content": status == "in_progress" ? [] : [Self.textPart(text)]]
    }

    static func textPart(_ text: String) -> [String: Any] { ["type": "output_text", "text": text, "annotations": [Any](), "logprobs": [Any]()] }

    func call(_ call: ParsedToolCall, index k: Int, status: String) -> [String: Any] {
        ["type": "function_call", "id": callID(k), "call_id": call.id, "name": call.name,
         "arguments": status == "in_progress" ? "" : call.arguments, "status": status]
    }

    /// The whole response to a request that was not streamed.
    func body(text: String, reason: FinishReason?, metrics: [RequestMetrics], toolFormat: ToolCallFormat?, tools: Set<String>) -> Data {
        let status = Self.status(reason)
        var content: String? = text, calls: [ParsedToolCall] = []
        if let toolFormat { (content, calls) = toolFormat.parse(text, tools: tools) }
        var output: [[String: Any]] = []
        if let content, !(calls.count > 0 && content.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty) || calls.isEmpty {
            output.append(message(content ?? "", status: status))
        }
        for (k, c) in calls.enumerated() { output.append(call(c, index: k, status: "completed")) }
        return Self.encode(object(status: status, output: output, reason: reason, metrics: metrics))
    }

    static func encode(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    }
}

/// A streamed response: `response.created` and `response.in_progress`, then per output
/// item its `added` event, its deltas and its `done` events, then `response.completed`
/// (or `response.incomplete` when the token cap cut it; an `error` event and
/// `response.failed` when the server cut it). Each event is `event: <type>` with a JSON
/// `data:` that repeats the type and numbers the events.
/// `@unchecked Sendable`: one stream's writer owns it; its JSON values are only read.
struct ResponsesStreamEncoder: StreamEncoder, @unchecked Sendable {
    let output: ResponsesOutput
    private var sequence = 0
    private var splitter: ToolCallSplitter?
    /// The items done so far, for the final object.
    private var items: [[String: Any]] = []
    /// The message being streamed, if one is open: its text so far.
    private var message: String?
    /// Whitespace that no item holds yet: it opens the message only if text follows it.
    private var pending = ""
    private var reason: FinishReason?
    private var failed = false

    init(output: ResponsesOutput, toolFormat: ToolCallFormat?, tools: Set<String>) {
        self.output = output
        splitter = toolFormat.map { ToolCallSplitter(format: $0, tools: tools) }
    }

    private mutating func event(_ type: String, _ fields: [String: Any]) -> ByteBuffer {
        var data = fields
        data["type"] = type
        data["sequence_number"] = sequence
        sequence += 1
        var buffer = ByteBuffer(string: "event: \(type)\n")
        buffer.writeImmutableBuffer(Self.event(ResponsesOutput.encode(data)))
        return buffer
    }

    mutating func start() -> [ByteBuffer] {
        let created = output.object(status: "in_progress", output: [])
        return [event("response.created", ["response": created]), event("response.in_progress", ["response": created])]
    }

    mutating func encode(_ o: GenerationOutput, prompt: Int) -> [ByteBuffer] {
        var events: [ByteBuffer] = []
        var pieces: [ToolCallSplitter.Piece]
        if splitter != nil {
            pieces = splitter!.feed(o.text)
            if o.finishReason != nil { pieces += splitter!.finish() }
        } else {
            pieces = [.content(o.text)]
        }
        for piece in pieces {
            switch piece {
            case .content(let text): events += content(text)
            case .call(let c):
                pending = ""
                events += closeMessage()
                let k = items.count, id = output.callID(k)
                events.append(event("response.output_item.added", ["output_index": k, "item": output.call(c, index: k, status: "in_progress")]))
                events.append(event("response.function_call_arguments.delta", ["output_index": k, "item_id": id, "delta": c.arguments]))
                events.append(event("response.function_call_arguments.done", ["output_index": k, "item_id": id, "arguments": c.arguments]))
                let item = output.call(c, index: k, status: "completed")
                events.append(event("response.output_item.done", ["output_index": k, "item": item]))
                items.append(item)
            }
        }
        if let r = o.finishReason { reason = r }
        return events
    }

    private mutating func content(_ text: String) -> [ByteBuffer] {
        if message == nil {
            pending += text
            guard !pending.allSatisfy(\.isWhitespace) else { return [] }
            return openMessage() + delta(take(&pending))
        }
        return delta(text)
    }

    private func take(_ s: inout String) -> String { defer { s = "" }; return s }

    private mutating func openMessage() -> [ByteBuffer] {
        message = ""
        let k = items.count
        return [event("response.output_item.added", ["output_index": k, "item": output.message("", status: "in_progress")]),
                event("response.content_part.added", ["output_index": k, "item_id": output.messageID, "content_index": 0, "part": ResponsesOutput.textPart("")])]
    }

    private mutating func delta(_ text: String) -> [ByteBuffer] {
        guard !text.isEmpty else { return [] }
        message! += text
        return [event("response.output_text.delta", ["output_index": items.count, "item_id": output.messageID, "content_index": 0, "delta": text, "logprobs": [Any]()])]
    }

    private mutating func closeMessage() -> [ByteBuffer] {
        guard let text = message else { return [] }
        message = nil
        let k = items.count, status = ResponsesOutput.status(reason)
        let item = output.message(text, status: status)
        items.append(item)
        return [event("response.output_text.done", ["output_index": k, "item_id": output.messageID, "content_index": 0, "text": text, "logprobs": [Any]()]),
                event("response.content_part.done", ["output_index": k, "item_id": output.messageID, "content_index": 0, "part": ResponsesOutput.textPart(text)]),
                event("response.output_item.done", ["output_index": k, "item": item])]
    }

    mutating func fail(_ error: APIError) -> [ByteBuffer] {
        failed = true
        let closed = closeMessage()
        return closed + [event("error", ["code": error.code ?? error.type, "message": error.message, "param": error.param ?? NSNull()]),
                         event("response.failed", ["response": output.object(status: "failed", output: items, error: error)])]
    }

    mutating func finish(_ metrics: [RequestMetrics]) -> [ByteBuffer] {
        guard !failed else { return [] }
        // An output of nothing (or only whitespace) is still one message.
        var events = message == nil && items.isEmpty ? openMessage() + delta(take(&pending)) : []
        events += closeMessage()
        let status = ResponsesOutput.status(reason)
        let final = output.object(status: status, output: items, reason: reason, metrics: metrics)
        events.append(event(status == "completed" ? "response.completed" : "response.incomplete", ["response": final]))
        return events
    }
}
