import Engine
import Foundation
import HTTPTypes
import Models

/// An error as OpenAI's API reports one: an HTTP status and
/// `{"error": {"message", "type", "param", "code"}}`. Messages never carry internals
/// (paths, stack traces).
public struct APIError: Error, Equatable, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let message: String
    public let type: String
    public let param: String?
    public let code: String?
    /// Seconds a client should wait before retrying (429, 503).
    public var retryAfter: Int?

    public init(_ status: HTTPResponse.Status, _ message: String, type: String, param: String? = nil, code: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status.code) \(message)" }

    public static func invalidRequest(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(.badRequest, message, type: "invalid_request_error", param: param, code: code)
    }

    /// A request-validation failure from the parser or the engine, as a 400 naming the field.
    public static func from(_ error: Error) -> APIError? {
        switch error {
        case let e as APIError: return e
        case let e as RequestFieldError: return .invalidRequest(e.message, param: e.param, code: e.code)
        case let e as SamplingError:
            if case .invalidParameter(let name, _) = e { return .invalidRequest(e.description, param: name) }
            return nil
        case let e as GenerationError:
            switch e {
            case .emptyPrompt: return .invalidRequest(e.description, param: "prompt")
            case .promptTooLong: return .invalidRequest(e.description, param: "prompt", code: "context_length_exceeded")
            case .invalidMaxTokens: return .invalidRequest(e.description, param: "max_tokens")
            case .constraintNeedsEngine: return .invalidRequest(e.description)
            }
        case let e as GrammarError:
            return .invalidRequest(e.description, code: "invalid_constraint")
        case let e as EngineError:
            switch e {
            case .exceedsKVCache: return .invalidRequest(e.description, param: "max_tokens")
            case .invalidSamples: return .invalidRequest(e.description, param: "n")
            case .invalidLogprobs: return .invalidRequest(e.description, param: "logprobs")
            case .invalidEmbeddingRequest: return .invalidRequest(e.description)
            case .invalidResume: return .invalidRequest(e.description, param: "resume_token_ids")
            case .kvTransferUnsupported: return .invalidRequest(e.description, code: "kv_transfer_unsupported")
            case .shutDown: return APIError(.serviceUnavailable, "the server is shutting down", type: "server_error", retryAfter: 5)
            case .invalidConfiguration: return nil
            }
        case let e as ModelError:
            if case .tokenOutOfRange = e { return .invalidRequest(e.description, param: "prompt") }
            return nil
        default: return nil
        }
    }

    /// The JSON body.
    public var body: Data {
        let error: [String: Any] = ["message": message, "type": type, "param": param ?? NSNull(), "code": code ?? NSNull()]
        return try! JSONSerialization.data(withJSONObject: ["error": error], options: [.sortedKeys, .withoutEscapingSlashes])
    }
}
