import Engine
import Foundation
import Tokenizer

/// A bad field of an OpenAI-style request, named as the request spells it.
struct RequestFieldError: Error, CustomStringConvertible {
    let param: String?
    let message: String
    var description: String { message }
}

/// Reads the fields of an OpenAI completion or chat-completion request (`prompt` or
/// `messages`, `max_tokens`, `temperature`, `top_p`, `n`, `stop`, `seed`, penalties,
/// `logprobs`, and the common extensions `top_k`, `min_p`, `repetition_penalty`,
/// `ignore_eos`) into an engine request. Unknown fields are ignored, as OpenAI's clients
/// expect; defaults are OpenAI's (temperature 1, top-p 1, no top-k or min-p).
struct OpenAIRequest {
    var request: GenerationRequest

    static let maxStopStrings = 4
    static let maxStopLength = 1000

    init(json: [String: Any], tokenizer: Tokenizer, chatTemplate: () throws -> ChatTemplate, contextLength: Int) throws {
        let prompt: [Int]
        if let messages = json["messages"] {
            guard let list = messages as? [[String: Any]], !list.isEmpty else {
                throw RequestFieldError(param: "messages", message: "messages must be a non-empty array of {role, content} objects")
            }
            let turns = try list.enumerated().map { i, m -> (role: String, content: String) in
                guard let role = m["role"] as? String else { throw RequestFieldError(param: "messages[\(i)].role", message: "messages[\(i)].role must be a string") }
                return (role, try Self.content(m["content"], at: i))
            }
            let text = try chatTemplate().render(turns, tokenizer: tokenizer)
            prompt = tokenizer.encode(text, parseSpecial: true, addSpecial: false)
        } else if let text = json["prompt"] as? String {
            prompt = tokenizer.encode(text, parseSpecial: true)
        } else if let ids = json["prompt"] as? [Any], !ids.isEmpty, ids.allSatisfy({ $0 is Int && !Self.isBoolean($0) }) {
            prompt = ids as! [Int]
        } else if json["prompt"] == nil {
            throw RequestFieldError(param: "prompt", message: "the request needs a prompt (or messages)")
        } else {
            throw RequestFieldError(param: "prompt", message: "prompt must be a string or an array of token ids")
        }
        guard !prompt.isEmpty else { throw RequestFieldError(param: "prompt", message: "the prompt is empty") }

        var p = GenerationParameters()
        p.sampling.temperature = 1
        p.sampling.topK = 0
        p.sampling.topP = 1
        p.sampling.minP = 0
        let maxTokens = try Self.int(json, "max_completion_tokens") ?? Self.int(json, "max_tokens")
        if let maxTokens, maxTokens < 1 {
            throw RequestFieldError(param: json["max_completion_tokens"] != nil ? "max_completion_tokens" : "max_tokens", message: "max_tokens must be at least 1, got \(maxTokens)")
        }
        p.maxTokens = maxTokens ?? max(1, contextLength - prompt.count)
        if let t = try Self.number(json, "temperature") {
            guard (0...2).contains(t) else { throw RequestFieldError(param: "temperature", message: "temperature must be between 0 and 2, got \(t)") }
            p.sampling.temperature = Float(t)
        }
        if let v = try Self.number(json, "top_p") {
            guard v > 0 && v <= 1 else { throw RequestFieldError(param: "top_p", message: "top_p must be in (0, 1], got \(v)") }
            p.sampling.topP = Float(v)
        }
        if let k = try Self.int(json, "top_k") {
            guard k >= -1 else { throw RequestFieldError(param: "top_k", message: "top_k must be -1 or 0 (off) or positive, got \(k)") }
            p.sampling.topK = max(0, k)
        }
        if let v = try Self.number(json, "min_p") {
            guard (0...1).contains(v) else { throw RequestFieldError(param: "min_p", message: "min_p must be in [0, 1], got \(v)") }
            p.sampling.minP = Float(v)
        }
        for (key, keyPath) in [("presence_penalty", \SamplingParameters.presencePenalty), ("frequency_penalty", \SamplingParameters.frequencyPenalty)] {
            if let v = try Self.number(json, key) {
                guard (-2...2).contains(v) else { throw RequestFieldError(param: key, message: "\(key) must be between -2 and 2, got \(v)") }
                p.sampling[keyPath: keyPath] = Float(v)
            }
        }
        if let v = try Self.number(json, "repetition_penalty") {
            guard v > 0 && v <= 10 else { throw RequestFieldError(param: "repetition_penalty", message: "repetition_penalty must be in (0, 10], got \(v)") }
            p.sampling.repetitionPenalty = Float(v)
        }
        if let seed = try Self.int(json, "seed") { p.sampling.seed = UInt64(bitPattern: Int64(seed)) }
        if let stop = json["stop"], !(stop is NSNull) {
            if let s = stop as? String {
                p.stopStrings = [s]
            } else if let list = stop as? [Any], list.allSatisfy({ $0 is String }) {
                p.stopStrings = list as! [String]
            } else {
                throw RequestFieldError(param: "stop", message: "stop must be a string or an array of strings")
            }
            guard p.stopStrings.count <= Self.maxStopStrings else {
                throw RequestFieldError(param: "stop", message: "at most \(Self.maxStopStrings) stop strings, got \(p.stopStrings.count)")
            }
            guard p.stopStrings.allSatisfy({ $0.utf8.count <= Self.maxStopLength }) else {
                throw RequestFieldError(param: "stop", message: "stop strings must be at most \(Self.maxStopLength) bytes")
            }
        }
        if let ignore = json["ignore_eos"] {
            guard Self.isBoolean(ignore), let b = ignore as? Bool else { throw RequestFieldError(param: "ignore_eos", message: "ignore_eos must be a boolean") }
            p.ignoreEndOfGeneration = b
        }
        request = GenerationRequest(prompt: prompt, parameters: p)
        if let n = try Self.int(json, "n") {
            guard (1...GenerationRequest.maxSamples).contains(n) else {
                throw RequestFieldError(param: "n", message: "n must be between 1 and \(GenerationRequest.maxSamples), got \(n)")
            }
            request.samples = n
        }
        // Completions: `logprobs` is a count; chat: a boolean with `top_logprobs`.
        if let lp = json["logprobs"], !(lp is NSNull) {
            if Self.isBoolean(lp) {
                if lp as! Bool { request.logprobs = try Self.int(json, "top_logprobs") ?? 0 }
            } else if let k = try Self.int(json, "logprobs") {
                request.logprobs = k
            } else {
                throw RequestFieldError(param: "logprobs", message: "logprobs must be a boolean or an integer")
            }
            if let k = request.logprobs, !(0...GenerationRequest.maxLogprobs).contains(k) {
                throw RequestFieldError(param: "top_logprobs", message: "top_logprobs must be between 0 and \(GenerationRequest.maxLogprobs), got \(k)")
            }
        }
        if let priority = try Self.int(json, "priority") { request.priority = priority }
    }

    private static func content(_ value: Any?, at i: Int) throws -> String {
        if let s = value as? String { return s }
        if let parts = value as? [[String: Any]] {
            return try parts.map { part in
                guard part["type"] as? String == "text", let text = part["text"] as? String else {
                    throw RequestFieldError(param: "messages[\(i)].content", message: "only text content parts are supported")
                }
                return text
            }.joined()
        }
        throw RequestFieldError(param: "messages[\(i)].content", message: "messages[\(i)].content must be a string or an array of text parts")
    }

    /// JSONSerialization gives booleans as NSNumbers that also cast to Int; their type code tells.
    static func isBoolean(_ value: Any) -> Bool {
        guard let n = value as? NSNumber else { return false }
        return String(cString: n.objCType) == "c"
    }

    /// A JSON number field (not a boolean); nil when absent or null.
    static func number(_ json: [String: Any], _ key: String) throws -> Double? {
        guard let v = json[key], !(v is NSNull) else { return nil }
        guard let n = v as? NSNumber, !isBoolean(n), n.doubleValue.isFinite else {
            throw RequestFieldError(param: key, message: "\(key) must be a number")
        }
        return n.doubleValue
    }

    /// A JSON integer field; nil when absent or null.
    static func int(_ json: [String: Any], _ key: String) throws -> Int? {
        guard let v = try number(json, key) else { return nil }
        guard v == v.rounded(), abs(v) < 9.2e18 else { throw RequestFieldError(param: key, message: "\(key) must be an integer") }
        return Int(v)
    }
}
