/// One request to the engine: a tokenized prompt and how to continue it.
public struct GenerationRequest: Sendable {
    public var prompt: [Int]
    public var parameters: GenerationParameters
    /// Independent samples of the same prompt (OpenAI's `n`); they share the prompt's KV
    /// blocks. Sample `i` of a seeded request draws from seed `seed + i`.
    public var samples: Int = 1
    /// Log-probabilities of each chosen token and of this many most likely alternatives
    /// (0: the chosen token only; nil: none).
    public var logprobs: Int? = nil
    /// Log-probabilities of each prompt token after the first, given the tokens before it,
    /// with this many most likely alternatives (nil: none). What evaluation harnesses score
    /// with; such a request computes its whole prompt (no prefix-cache hit) and may have
    /// `maxTokens` 0, scoring only.
    public var promptLogprobs: Int? = nil
    /// Pool the prompt's final hidden states into one vector, an embedding, and generate
    /// nothing (`maxTokens` 0, one sample). Such a request computes its whole prompt (no
    /// prefix-cache hit: cached blocks keep no hidden states).
    public var pooling: Pooling? = nil
    /// Lower values are scheduled first; equal priorities are first come, first served.
    public var priority: Int = 0
    /// Tokens this request already generated on a worker that was lost: they follow the
    /// prompt as generated tokens (counted against `maxTokens`, seen by penalties, stop
    /// strings and a grammar), their text is not produced again, and generation goes on
    /// after them, as it would have there. One sample only.
    public var resumedTokens: [Int] = []
    /// Ship the prompt's keys and values: its outputs carry each full block of the prompt
    /// as soon as it is computed (or found in the prefix cache), for a decode worker to
    /// import (disaggregated prefill).
    public var exportsKV = false

    public init(prompt: [Int], parameters: GenerationParameters = GenerationParameters()) {
        self.prompt = prompt
        self.parameters = parameters
    }

    /// The most alternatives `logprobs` may ask for.
    public static let maxLogprobs = 20
    /// The most samples one request may ask for.
    public static let maxSamples = 128
}

/// How a prompt's hidden states become one embedding (llama.cpp's `--pooling` names).
public enum Pooling: String, Sendable, CaseIterable {
    /// The average over every prompt position.
    case mean
    /// The first position's (BERT's CLS token).
    case cls
    /// The last position's (what decoder-only embedding models train).
    case last
}

/// The log-probability of a chosen token under the model (before sampling's penalties,
/// temperature and filters, as OpenAI and vLLM report them), with the most likely tokens.
public struct TokenLogprobs: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public let token: Int
        public let logprob: Double
    }
    public let chosen: Entry
    public let top: [Entry]
}

/// What one request waited for and took, reported with its last output.
public struct RequestMetrics: Sendable {
    public var promptTokens: Int
    /// Prompt tokens whose keys and values came from the prefix cache.
    public var cachedPromptTokens: Int
    public var completionTokens: Int
    /// From submission to the first step that ran any of the request's tokens.
    public var queueSeconds: Double
    /// From submission to the first generated token.
    public var timeToFirstTokenSeconds: Double
    /// Gaps between consecutive generated tokens of each sample.
    public var interTokenSeconds: [Double]
    public var totalSeconds: Double
    /// Tokens drafted for speculative decoding, and how many of them were kept
    /// (llama-server's `draft_n` and `draft_n_accepted`).
    public var draftTokens = 0
    public var acceptedDraftTokens = 0
}

/// A piece of one sample's output: the tokens generated since the last piece and the text
/// that became final with them. The last piece of a sample carries its finish reason; the
/// last piece of the request also carries the request's metrics.
public struct GenerationOutput: Sendable {
    /// Which sample (0 ..< `samples`).
    public var index: Int
    public var text: String
    public var tokens: [Int]
    /// One entry per token, when the request asked for log-probabilities.
    public var logprobs: [TokenLogprobs]
    /// On the request's first output, when it asked for them: entry i is prompt token i + 1's.
    public var promptLogprobs: [TokenLogprobs]? = nil
    /// The pooled hidden state, when the request asked for an embedding (not normalised).
    public var embedding: [Float]? = nil
    /// Full prompt blocks computed since the last piece, in order, when the request exports
    /// its keys and values.
    public var kvBlocks: [KVBlock] = []
    public var finishReason: FinishReason?
    public var metrics: RequestMetrics?
}
