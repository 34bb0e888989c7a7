import Foundation
import Models
import Tokenizer

/// Why generation ended, with OpenAI's names.
public enum FinishReason: String, Sendable, Codable {
    /// An end-of-generation token or a stop string.
    case stop
    /// `maxTokens` reached, or the context is full.
    case length
    /// The request was cancelled.
    case abort
}

public struct GenerationParameters: Sendable {
    public var maxTokens: Int = 256
    public var sampling = SamplingParameters()
    public var stopStrings: [String] = []
    /// Keep going past end-of-generation tokens.
    public var ignoreEndOfGeneration = false
    /// What the output must match (a grammar, a JSON schema); the engine enforces it.
    public var constraint: OutputConstraint? = nil
    /// Control tokens the output shows as their text, in its text and in the vocabulary its
    /// constraint masks over: a tool-call format's markers (Mistral's `[TOOL_CALLS]`, Llama
    /// 3's `<|python_tag|>`), which the parser of calls must see and the grammar must allow.
    public var shownControlTokens: Set<Int> = []
    public init() {}
}

public struct GenerationResult: Sendable {
    public var text: String
    /// Generated ids, ending with the end-of-generation token when one stopped generation.
    public var tokens: [Int]
    public var promptTokens: Int
    public var finishReason: FinishReason
    public var promptSeconds: Double
    public var generationSeconds: Double
}

public enum GenerationError: Error, Equatable, CustomStringConvertible {
    case emptyPrompt
    case promptTooLong(promptTokens: Int, contextLength: Int)
    case invalidMaxTokens(Int)
    case constraintNeedsEngine

    public var description: String {
        switch self {
        case .emptyPrompt: "the prompt is empty"
        case .promptTooLong(let p, let c): "the prompt has \(p) tokens but the context holds \(c); shorten it or raise the context length"
        case .invalidMaxTokens(let n): "max tokens must be at least 1, got \(n)"
        case .constraintNeedsEngine: "constrained output (a grammar or a JSON schema) runs on the serving engine, not the single-sequence generator"
        }
    }
}

/// Runs one sequence at a time: prefill the prompt in chunks, then sample token by token,
/// streaming text that never splits a UTF-8 character or shows part of a stop string.
public final class Generator {
    public let model: any LanguageModel
    public let tokenizer: Tokenizer
    public let contextLength: Int
    /// Prompt tokens per forward pass during prefill (bounds activation memory).
    public var prefillChunk = 512

    public init(model: any LanguageModel, tokenizer: Tokenizer, contextLength: Int) {
        self.model = model
        self.tokenizer = tokenizer
        self.contextLength = min(contextLength, model.trainedContextLength)
    }

    /// Generates a continuation of `prompt`. `onText` receives text as it becomes final;
    /// returning false from it stops generation early.
    public func generate(prompt: [Int], parameters: GenerationParameters, cache existing: KVCache? = nil,
                         onText: (String) -> Bool = { _ in true }) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw GenerationError.emptyPrompt }
        guard parameters.maxTokens >= 1 else { throw GenerationError.invalidMaxTokens(parameters.maxTokens) }
        guard parameters.constraint == nil else { throw GenerationError.constraintNeedsEngine }
        guard prompt.count < contextLength else { throw GenerationError.promptTooLong(promptTokens: prompt.count, contextLength: contextLength) }
        var sampler = try Sampler(parameters.sampling)
        let cache = existing ?? model.makeCache(capacity: contextLength)

        // Reuse whatever prefix of the prompt the cache already holds (multi-turn chat).
        let reused = cache.length
        let start = Date()
        var logits: [Float] = []
        var position = reused
        while position < prompt.count {
            let end = min(prompt.count, position + prefillChunk)
            let chunk = Array(prompt[position..<end])
            logits = try model.forward(chunk, cache: cache, logitRows: end == prompt.count ? (chunk.count - 1)..<chunk.count : 0..<0)
            position = end
        }
        precondition(!logits.isEmpty, "the cache already held the whole prompt")
        let promptSeconds = Date().timeIntervalSince(start)

        var history = prompt
        var generated: [Int] = []
        var text = ""
        var stream = TextStream(tokenizer: tokenizer, stopStrings: parameters.stopStrings, shownControlTokens: parameters.shownControlTokens)
        var finish = FinishReason.length
        let genStart = Date()
        var consumerStopped = false
        func deliver(_ piece: String) {
            guard !piece.isEmpty else { return }
            text += piece
            if !onText(piece) { consumerStopped = true }
        }
        while true {
            let token = sampler.sample(logits, history: history).token
            sampler.accept(token)
            generated.append(token)
            history.append(token)
            if !parameters.ignoreEndOfGeneration, tokenizer.isEndOfGeneration(token) {
                finish = .stop
                break
            }
            deliver(stream.append(token))
            if stream.stopped || consumerStopped { finish = .stop; break }
            if generated.count >= parameters.maxTokens || cache.length >= contextLength { break }
            logits = try model.forward([token], cache: cache, logitRows: 0..<1)
        }
        deliver(stream.finish())
        if stream.stopped { finish = .stop }
        return GenerationResult(text: text, tokens: generated, promptTokens: prompt.count, finishReason: finish,
                                promptSeconds: promptSeconds, generationSeconds: Date().timeIntervalSince(genStart))
    }
}
