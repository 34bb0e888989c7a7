import Engine
import Foundation
import NIOCore
import Tokenizer

/// Turns one request's engine outputs into server-sent events, in the shape of its API:
/// the plumbing that runs the engine streams, keeps the connection alive and cuts a stream
/// is `APIServer.stream`, the same for every API.
protocol StreamEncoder: Sendable {
    /// The events that open the stream, before the engine's first output.
    mutating func start() -> [ByteBuffer]
    /// The events for output `o` of prompt `prompt`.
    mutating func encode(_ o: GenerationOutput, prompt: Int) -> [ByteBuffer]
    /// The events that say the server cut the stream.
    mutating func fail(_ error: APIError) -> [ByteBuffer]
    /// The events that end the stream (after a failure too); `metrics`: each sequence's.
    mutating func finish(_ metrics: [RequestMetrics]) -> [ByteBuffer]
}

extension StreamEncoder {
    mutating func start() -> [ByteBuffer] { [] }

    /// A `data:` event.
    static func event(_ data: Data) -> ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
        return buffer
    }
}

/// The chunks of a streamed completion or chat completion: `data: {chunk}` per output, an
/// optional usage chunk, then `data: [DONE]`.
struct CompletionStreamEncoder: StreamEncoder {
    let header: APIServer.Header
    let kind: OpenAIRequest.Kind
    let samples: Int
    let wantsLogprobs: Bool
    let includeUsage: Bool
    let tokenizer: Tokenizer
    var echo: PromptEcho
    private var started = Set<Int>()
    /// With tools, each choice's text goes through a splitter: content streams as it comes,
    /// a call goes out whole once it closes.
    private var splitters: [ToolCallSplitter]?
    private var callsSent: [Int]
    private var offsets: [Int]

    init(parsed: OpenAIRequest, echo: PromptEcho, prompts: Int, header: APIServer.Header, tokenizer: Tokenizer, toolFormat: ToolCallFormat?) {
        self.header = header
        kind = parsed.kind
        samples = parsed.samples
        wantsLogprobs = parsed.logprobs != nil
        includeUsage = parsed.includeUsage
        self.tokenizer = tokenizer
        self.echo = echo
        let toolNames = Set(parsed.tools.map(\.name))
        splitters = toolFormat.map { f in [ToolCallSplitter](repeating: ToolCallSplitter(format: f, tools: toolNames), count: prompts * parsed.samples) }
        callsSent = [Int](repeating: 0, count: prompts * parsed.samples)
        offsets = [Int](repeating: 0, count: prompts * parsed.samples)
        // A resumed stream continues one the client has had the opening of.
        if parsed.resumeTokens != nil { started = [0] }
    }

    private func chunk<Choice: Encodable>(_ choices: [Choice], usage: OpenAIResponse.Usage? = nil, timings: OpenAIResponse.Timings? = nil) -> ByteBuffer {
        Self.event(OpenAIResponse.encode(OpenAIResponse.Envelope(id: header.id, object: kind == .chat ? "chat.completion.chunk" : "text_completion",
                                                                 created: header.created, model: header.model, system_fingerprint: APIServer.fingerprint,
                                                                 choices: choices, usage: usage, timings: timings)))
    }

    mutating func encode(_ o: GenerationOutput, prompt: Int) -> [ByteBuffer] {
        let index = prompt * samples + o.index
        var events: [ByteBuffer] = []
        switch kind {
        case .completion:
            if let scored = o.promptLogprobs { echo.scored[prompt] = scored }
            if started.insert(index).inserted, echo.texts != nil || echo.promptLogprobs {
                // The echo goes first, as its own chunk (vLLM's order).
                let (echoed, end) = echo.logprobs(prompt, tokenizer: tokenizer)
                var first = OpenAIResponse.CompletionChoice(index: index, text: echo.texts?[prompt] ?? "",
                                                            logprobs: wantsLogprobs && echo.texts != nil ? echoed : nil, finish_reason: nil)
                if echo.promptLogprobs { first.prompt_logprobs = OpenAIResponse.promptLogprobs(echo.scored[prompt] ?? [], tokenizer: tokenizer) }
                if echo.texts != nil { offsets[index] = end }
                events.append(chunk([first]))
            }
            let lp = wantsLogprobs ? OpenAIResponse.completionLogprobs(o.logprobs, tokenizer: tokenizer, textOffset: offsets[index]) : nil
            offsets[index] += o.text.utf8.count
            events.append(chunk([OpenAIResponse.CompletionChoice(index: index, text: o.text, logprobs: lp, finish_reason: o.finishReason?.rawValue)]))
        case .chat:
            if started.insert(index).inserted {
                events.append(chunk([OpenAIResponse.ChatChunkChoice(index: index, delta: .init(role: "assistant", content: ""), logprobs: nil, finish_reason: nil)]))
            }
            let lp = wantsLogprobs ? OpenAIResponse.chatLogprobs(o.logprobs, tokenizer: tokenizer) : nil
            guard splitters != nil else {
                events.append(chunk([OpenAIResponse.ChatChunkChoice(index: index, delta: .init(content: o.text), logprobs: lp, finish_reason: o.finishReason?.rawValue)]))
                return events
            }
            var pieces = splitters![index].feed(o.text)
            if o.finishReason != nil { pieces += splitters![index].finish() }
            var delta = OpenAIResponse.Message(content: "")
            var calls: [OpenAIResponse.ToolCall] = []
            for p in pieces {
                switch p {
                case .content(let text): delta.content! += text
                case .call(let c):
                    calls.append(OpenAIResponse.ToolCall(c, index: callsSent[index]))
                    callsSent[index] += 1
                }
            }
            if !calls.isEmpty {
                delta.tool_calls = calls
                if delta.content?.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty == true { delta.content = nil }
            }
            let reason = o.finishReason.map { ToolCallFormat.finishReason($0, calls: callsSent[index]) }
            if delta.content?.isEmpty == true, delta.tool_calls == nil, reason == nil, lp == nil { return events }
            events.append(chunk([OpenAIResponse.ChatChunkChoice(index: index, delta: delta, logprobs: lp, finish_reason: reason)]))
        }
        return events
    }

    mutating func fail(_ error: APIError) -> [ByteBuffer] { [Self.event(error.body)] }

    mutating func finish(_ metrics: [RequestMetrics]) -> [ByteBuffer] {
        var events: [ByteBuffer] = []
        if includeUsage {
            let usage = OpenAIResponse.Usage(prompt: metrics.reduce(0) { $0 + $1.promptTokens }, completion: metrics.reduce(0) { $0 + $1.completionTokens },
                                             cached: metrics.reduce(0) { $0 + $1.cachedPromptTokens })
            events.append(chunk([OpenAIResponse.CompletionChoice](), usage: usage, timings: OpenAIResponse.Timings(metrics)))
        }
        events.append(ByteBuffer(string: "data: [DONE]\n\n"))
        return events
    }
}
