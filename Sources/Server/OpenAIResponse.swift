import Engine
import Foundation
import Tokenizer

/// The response bodies of the completion and chat-completion endpoints, streamed or not,
/// with OpenAI's field names.
public enum OpenAIResponse {
    public struct Usage: Encodable, Equatable {
        public struct PromptDetails: Encodable, Equatable {
            public let cached_tokens: Int
        }
        public let prompt_tokens: Int
        public let completion_tokens: Int
        public let total_tokens: Int
        public let prompt_tokens_details: PromptDetails

        public init(prompt: Int, completion: Int, cached: Int) {
            prompt_tokens = prompt
            completion_tokens = completion
            total_tokens = prompt + completion
            prompt_tokens_details = PromptDetails(cached_tokens: cached)
        }
    }

    /// llama-server's `timings`: the prompt's and the generation's tokens and time, and
    /// what speculative decoding drafted and kept (`draft_n`, `draft_n_accepted`). Over
    /// several prompts: tokens add up, times are the longest request's.
    public struct Timings: Encodable, Equatable {
        public let prompt_n: Int
        public let prompt_ms: Double
        public let prompt_per_second: Double
        public let predicted_n: Int
        public let predicted_ms: Double
        public let predicted_per_second: Double
        public let draft_n: Int
        public let draft_n_accepted: Int

        public init(_ metrics: [RequestMetrics]) {
            prompt_n = metrics.reduce(0) { $0 + $1.promptTokens - $1.cachedPromptTokens }
            prompt_ms = 1000 * (metrics.map { $0.timeToFirstTokenSeconds - $0.queueSeconds }.max() ?? 0)
            prompt_per_second = Double(prompt_n) / max(prompt_ms / 1000, 1e-9)
            predicted_n = metrics.reduce(0) { $0 + $1.completionTokens }
            predicted_ms = 1000 * (metrics.map { $0.totalSeconds - $0.timeToFirstTokenSeconds }.max() ?? 0)
            predicted_per_second = Double(predicted_n) / max(predicted_ms / 1000, 1e-9)
            draft_n = metrics.reduce(0) { $0 + $1.draftTokens }
            draft_n_accepted = metrics.reduce(0) { $0 + $1.acceptedDraftTokens }
        }
    }

    /// `{id, object, created, model, system_fingerprint, choices, usage}`, and llama-server's
    /// `timings` with the last of a response.
    public struct Envelope<Choice: Encodable>: Encodable {
        public let id: String
        public let object: String
        public let created: Int
        public let model: String
        public let system_fingerprint: String
        public let choices: [Choice]
        public let usage: Usage?
        public var timings: Timings? = nil
    }

    /// Completions' log-probabilities: parallel arrays over the generated tokens.
    public struct CompletionLogprobs: Encodable, Equatable {
        public var tokens: [String] = []
        /// The first prompt token's are null under `echo`: nothing came before it.
        public var token_logprobs: [Double?] = []
        public var top_logprobs: [[String: Double]?] = []
        public var text_offset: [Int] = []

        mutating func append(_ other: CompletionLogprobs) {
            tokens += other.tokens
            token_logprobs += other.token_logprobs
            top_logprobs += other.top_logprobs
            text_offset += other.text_offset
        }
    }

    public struct CompletionChoice: Encodable {
        public let index: Int
        public let text: String
        public let logprobs: CompletionLogprobs?
        public let finish_reason: String?
        /// vLLM's `prompt_logprobs`: null for the first prompt token, then each token's entry
        /// keyed by token id, with the most likely alternatives.
        public var prompt_logprobs: [[String: PromptLogprob]?]? = nil
    }

    public struct PromptLogprob: Encodable, Equatable {
        public let logprob: Double
        /// 1 for the most likely token; null for a prompt token outside the alternatives asked for.
        public let rank: Int?
        public let decoded_token: String
    }

    public struct ChatTokenLogprob: Encodable, Equatable {
        public struct Alternative: Encodable, Equatable {
            public let token: String
            public let logprob: Double
            public let bytes: [UInt8]
        }
        public let token: String
        public let logprob: Double
        public let bytes: [UInt8]
        public let top_logprobs: [Alternative]
    }

    public struct ChatLogprobs: Encodable, Equatable {
        public var content: [ChatTokenLogprob] = []
    }

    /// A message or a streamed delta. `content` is always written, `null` when there is
    /// none (a message that only calls tools), as OpenAI writes it.
    public struct Message: Encodable, Equatable {
        public var role: String?
        public var content: String?
        public var tool_calls: [ToolCall]? = nil

        enum CodingKeys: String, CodingKey { case role, content, tool_calls }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encodeIfPresent(role, forKey: .role)
            try c.encode(content, forKey: .content)
            try c.encodeIfPresent(tool_calls, forKey: .tool_calls)
        }
    }

    /// A call in a message (`index` only in a streamed delta).
    public struct ToolCall: Encodable, Equatable {
        public struct Function: Encodable, Equatable {
            public let name: String
            public let arguments: String
        }
        public var index: Int? = nil
        public let id: String
        public var type = "function"
        public let function: Function

        init(_ call: ParsedToolCall, index: Int? = nil) {
            self.index = index
            id = call.id
            function = Function(name: call.name, arguments: call.arguments)
        }
    }

    public struct ChatChoice: Encodable {
        public let index: Int
        public let message: Message
        public let logprobs: ChatLogprobs?
        public let finish_reason: String
    }

    public struct ChatChunkChoice: Encodable {
        public let index: Int
        public let delta: Message
        public let logprobs: ChatLogprobs?
        public let finish_reason: String?
    }

    /// The text of a token as logprobs show it (special tokens by name).
    static func bytes(of token: Int, tokenizer: Tokenizer) -> [UInt8] { tokenizer.bytes(of: token, renderSpecial: true) }

    static func completionLogprobs(_ entries: [TokenLogprobs], tokenizer: Tokenizer, textOffset: Int) -> CompletionLogprobs {
        var out = CompletionLogprobs()
        var offset = textOffset
        for e in entries {
            let text = String(decoding: bytes(of: e.chosen.token, tokenizer: tokenizer), as: UTF8.self)
            out.tokens.append(text)
            out.token_logprobs.append(e.chosen.logprob)
            var top: [String: Double] = [:]
            for alt in e.top {
                // Distinct ids can share a text; the dictionary keeps the likelier.
                let key = String(decoding: bytes(of: alt.token, tokenizer: tokenizer), as: UTF8.self)
                top[key] = max(top[key] ?? -.infinity, alt.logprob)
            }
            out.top_logprobs.append(top)
            out.text_offset.append(offset)
            offset += text.utf8.count
        }
        return out
    }

    /// A prompt's echo in the legacy fields: its first token with null log-probabilities.
    static func echoedLogprobs(prompt: [Int], scored: [TokenLogprobs], tokenizer: Tokenizer) -> CompletionLogprobs {
        var out = CompletionLogprobs()
        let first = String(decoding: bytes(of: prompt[0], tokenizer: tokenizer), as: UTF8.self)
        out.tokens = [first]
        out.token_logprobs = [nil]
        out.top_logprobs = [nil]
        out.text_offset = [0]
        out.append(completionLogprobs(scored, tokenizer: tokenizer, textOffset: first.utf8.count))
        return out
    }

    static func promptLogprobs(_ scored: [TokenLogprobs], tokenizer: Tokenizer) -> [[String: PromptLogprob]?] {
        [nil] + scored.map { e in
            var entry: [String: PromptLogprob] = [:]
            for (rank, alt) in e.top.enumerated() {
                entry[String(alt.token)] = PromptLogprob(logprob: alt.logprob, rank: rank + 1, decoded_token: String(decoding: bytes(of: alt.token, tokenizer: tokenizer), as: UTF8.self))
            }
            if entry[String(e.chosen.token)] == nil {
                entry[String(e.chosen.token)] = PromptLogprob(logprob: e.chosen.logprob, rank: nil, decoded_token: String(decoding: bytes(of: e.chosen.token, tokenizer: tokenizer), as: UTF8.self))
            }
            return entry
        }
    }

    static func chatLogprobs(_ entries: [TokenLogprobs], tokenizer: Tokenizer) -> ChatLogprobs {
        ChatLogprobs(content: entries.map { e in
            let b = bytes(of: e.chosen.token, tokenizer: tokenizer)
            return ChatTokenLogprob(
                token: String(decoding: b, as: UTF8.self), logprob: e.chosen.logprob, bytes: b,
                top_logprobs: e.top.map { alt in
                    let ab = bytes(of: alt.token, tokenizer: tokenizer)
                    return .init(token: String(decoding: ab, as: UTF8.self), logprob: alt.logprob, bytes: ab)
                })
        })
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    public static func encode<T: Encodable>(_ value: T) -> Data { try! encoder.encode(value) }
}
