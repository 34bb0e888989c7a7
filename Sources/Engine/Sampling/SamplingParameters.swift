/// How the next token is chosen. Defaults follow llama.cpp's command-line tools.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (always the most likely token).
    public var temperature: Float = 0.8
    /// Keep the K most likely tokens; 0 turns it off.
    public var topK: Int = 40
    /// Keep the smallest set of tokens whose probability reaches P; 1 turns it off.
    public var topP: Float = 0.95
    /// Drop tokens less likely than `minP` times the most likely one; 0 turns it off.
    public var minP: Float = 0.05
    /// Divide positive (multiply negative) logits of recently seen tokens; 1 turns it off.
    public var repetitionPenalty: Float = 1.0
    /// Subtract from the logit of every token seen at least once (OpenAI's definition).
    public var presencePenalty: Float = 0
    /// Subtract, per occurrence, from the logit of every token seen (OpenAI's definition).
    public var frequencyPenalty: Float = 0
    /// How many recent tokens (prompt included) the penalties look at.
    public var penaltyWindow: Int = 64
    /// Makes sampling reproducible; nil draws a random seed.
    public var seed: UInt64? = nil
    /// Added to the logits of these token ids before anything else (OpenAI's `logit_bias`;
    /// -100 in effect bans a token, 100 forces it).
    public var logitBias: [Int: Float] = [:]

    public init() {}

    public static var greedy: SamplingParameters {
        var p = SamplingParameters()
        p.temperature = 0
        return p
    }

    /// Rejects values that make no sense, naming the parameter.
    public func validate() throws {
        func check(_ ok: Bool, _ name: String, _ message: String) throws {
            if !ok { throw SamplingError.invalidParameter(name: name, message: message) }
        }
        try check(temperature.isFinite && temperature >= 0 && temperature <= 100, "temperature", "must be between 0 and 100, got \(temperature)")
        try check(topK >= 0, "top_k", "must be 0 (off) or positive, got \(topK)")
        try check(topP.isFinite && topP > 0 && topP <= 1, "top_p", "must be in (0, 1], got \(topP)")
        try check(minP.isFinite && minP >= 0 && minP <= 1, "min_p", "must be in [0, 1], got \(minP)")
        try check(repetitionPenalty.isFinite && repetitionPenalty > 0 && repetitionPenalty <= 10, "repetition_penalty", "must be in (0, 10], got \(repetitionPenalty)")
        try check(presencePenalty.isFinite && abs(presencePenalty) <= 2, "presence_penalty", "must be in [-2, 2], got \(presencePenalty)")
        try check(frequencyPenalty.isFinite && abs(frequencyPenalty) <= 2, "frequency_penalty", "must be in [-2, 2], got \(frequencyPenalty)")
        try check(penaltyWindow >= 0 && penaltyWindow <= 1 << 20, "penalty_window", "must be between 0 and 2^20, got \(penaltyWindow)")
        for (token, bias) in logitBias {
            try check(token >= 0, "logit_bias", "token ids must not be negative, got \(token)")
            try check(bias.isFinite && abs(bias) <= 100, "logit_bias", "biases must be between -100 and 100, got \(bias) for token \(token)")
        }
    }
}

public enum SamplingError: Error, Equatable, CustomStringConvertible {
    case invalidParameter(name: String, message: String)

    public var description: String {
        switch self {
        case .invalidParameter(let name, let message): "\(name) \(message)"
        }
    }
}
