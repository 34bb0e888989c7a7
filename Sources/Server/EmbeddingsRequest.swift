import Engine
import Foundation
import Tokenizer

/// A request to `POST /v1/embeddings`: one or more inputs (strings, or token ids), each
/// pooled by the engine into one vector, answered L2-normalised as OpenAI and llama-server
/// do, as JSON floats or as base64 of little-endian float32 (`encoding_format`, which
/// OpenAI's Python client sets to base64 unless told otherwise).
struct EmbeddingsRequest {
    enum Encoding: String { case float, base64 }

    let inputs: [OpenAIRequest.Prompt]
    let encoding: Encoding
    let dimensions: Int?

    /// OpenAI's limit on inputs per request.
    static let maxInputs = 2048

    init(json: [String: Any]) throws {
        inputs = try OpenAIRequest.prompts(json["input"], maxPrompts: Self.maxInputs, param: "input")
        switch json["encoding_format"] {
        case nil, is NSNull: encoding = .float
        case let name as String:
            guard let e = Encoding(rawValue: name) else { throw RequestFieldError(param: "encoding_format", "encoding_format must be float or base64, not \(name.prefix(40))") }
            encoding = e
        default: throw RequestFieldError(param: "encoding_format", "encoding_format must be float or base64")
        }
        dimensions = try OpenAIRequest.int(json, "dimensions")
    }

    /// One engine request per input, tokenized as completion prompts are.
    func generationRequests(tokenizer: Tokenizer, contextLength: Int, pooling: Pooling, width: Int) throws -> [GenerationRequest] {
        if let dimensions, dimensions != width {
            throw RequestFieldError(param: "dimensions", "this model's embeddings have \(width) dimensions; it cannot give \(dimensions)")
        }
        return try inputs.enumerated().map { i, input in
            let param = inputs.count == 1 ? "input" : "input[\(i)]"
            let ids: [Int]
            switch input {
            case .text(let text):
                // At least bytes / longest-token tokens: refused before tokenizing when that cannot fit.
                guard text.utf8.count / tokenizer.vocabulary.longestTokenBytes < contextLength else {
                    throw RequestFieldError(param: param, "\(param) takes \(text.utf8.count) bytes, more than this model's context of \(contextLength) tokens holds",
                                            code: "context_length_exceeded")
                }
                ids = tokenizer.encode(text, parseSpecial: true)
            case .tokens(let tokens): ids = tokens
            case .messages: preconditionFailure("embeddings take no messages")
            }
            guard !ids.isEmpty else { throw RequestFieldError(param: param, "\(param) is empty") }
            for t in ids where t < 0 || t >= tokenizer.vocabulary.count {
                throw RequestFieldError(param: param, "token id \(t) is outside the vocabulary of \(tokenizer.vocabulary.count) tokens")
            }
            guard ids.count < contextLength else {
                throw RequestFieldError(param: param, "This model's maximum context length is \(contextLength) tokens. However, \(param) has \(ids.count) tokens. Please reduce its length.",
                                        code: "context_length_exceeded")
            }
            var request = GenerationRequest(prompt: ids)
            request.parameters.maxTokens = 0
            request.pooling = pooling
            return request
        }
    }

    /// The response: each input's vector, L2-normalised, in input order.
    static func body(_ vectors: [[Float]], promptTokens: Int, model: String, encoding: Encoding) -> Data {
        let data: [[String: Any]] = vectors.enumerated().map { i, vector in
            let norm = vector.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            let unit = vector.map { norm > 0 ? Float(Double($0) / norm) : 0 }
            let embedding: Any
            switch encoding {
            case .float: embedding = unit.map(Double.init)
            case .base64: embedding = unit.withUnsafeBytes { Data($0) }.base64EncodedString()
            }
            return ["object": "embedding", "index": i, "embedding": embedding]
        }
        let object: [String: Any] = ["object": "list", "data": data, "model": model, "usage": ["prompt_tokens": promptTokens, "total_tokens": promptTokens]]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    }
}
