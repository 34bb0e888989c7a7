import Foundation
import Models

/// Teacher-forced scoring and perplexity: what evaluation harnesses ask of an engine.
public enum Evaluation {
    public struct TokenLogProbability: Sendable, Equatable {
        public let id: Int
        public let logprob: Double
    }

    /// Natural-log softmax of one row of logits, computed in double.
    public static func logSoftmax(_ row: ArraySlice<Float>) -> [Double] {
        let m = Double(row.max() ?? 0)
        let lse = log(row.reduce(0.0) { $0 + exp(Double($1) - m) }) + m
        return row.map { Double($0) - lse }
    }

    /// For each completion position, the `topK` most likely next tokens given the prompt
    /// and the completion before that position.
    public static func score(model: any LanguageModel, prompt: [Int], completion: [Int], topK: Int) throws -> [[TokenLogProbability]] {
        guard !prompt.isEmpty else { throw GenerationError.emptyPrompt }
        guard !completion.isEmpty else { return [] }
        let all = prompt + completion
        let cache = model.makeCache(capacity: all.count)
        let logits = try model.forward(all, cache: cache, logitRows: (prompt.count - 1)..<(all.count - 1))
        let v = model.vocabularySize
        return (0..<completion.count).map { i in
            let lp = logSoftmax(logits[(i * v)..<((i + 1) * v)])
            let row = logits[(i * v)..<((i + 1) * v)]
            return TopK.indices(of: Array(row), k: topK).map { TokenLogProbability(id: $0, logprob: lp[$0]) }
        }
    }

    public struct PerplexityResult: Sendable {
        public let perplexity: Double
        public let chunks: Int
        public let scoredTokens: Int
    }

    /// Perplexity as llama.cpp's `llama-perplexity` computes it: consecutive chunks of
    /// `context` tokens (the remainder dropped), each evaluated from an empty cache, the
    /// negative log-likelihood averaged over the second half of every chunk (positions
    /// `context/2 ..< context-1` predicting the next token). With `bos` (a model that adds
    /// BOS), each chunk's first token is replaced by it, as llama-perplexity does.
    public static func perplexity(model: any LanguageModel, tokens: [Int], context: Int, maxChunks: Int? = nil, bos: Int? = nil,
                                  progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> PerplexityResult {
        precondition(context >= 4, "context too small for perplexity")
        var chunks = tokens.count / context
        if let maxChunks { chunks = min(chunks, maxChunks) }
        let first = context / 2
        var nll = 0.0
        var count = 0
        let v = model.vocabularySize
        for c in 0..<chunks {
            var chunk = Array(tokens[(c * context)..<((c + 1) * context)])
            if let bos { chunk[0] = bos }
            let cache = model.makeCache(capacity: context)
            let logits = try model.forward(chunk, cache: cache, logitRows: first..<(context - 1))
            for (row, position) in (first..<(context - 1)).enumerated() {
                let lp = logSoftmax(logits[(row * v)..<((row + 1) * v)])
                nll -= lp[chunk[position + 1]]
                count += 1
            }
            progress(c + 1, chunks, exp(nll / Double(count)))
        }
        return PerplexityResult(perplexity: exp(nll / Double(max(count, 1))), chunks: chunks, scoredTokens: count)
    }
}
