import ArgumentParser
import Engine
import Foundation

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure perplexity on a text file, as llama.cpp's llama-perplexity does.",
        discussion: "The text is tokenized without BOS, split into consecutive chunks of --ctx tokens (the remainder dropped); each chunk runs from an empty cache and the negative log-likelihood is averaged over the second half of every chunk.")

    @OptionGroup var modelArguments: ModelArguments

    @Option(name: .long, help: "The text file.")
    var file: String

    @Option(name: .long, help: "Tokens per chunk.")
    var ctx: Int = 512

    @Option(name: .long, help: "Evaluate at most this many chunks.")
    var chunks: Int?

    func validate() throws {
        if ctx < 4 || ctx > 1 << 20 { throw ValidationError("--ctx must be between 4 and 1048576") }
    }

    func run() throws {
        try reportingErrors {
            let loaded = try modelArguments.load()
            let text = try String(contentsOfFile: file, encoding: .utf8)
            let tokens = loaded.tokenizer.encode(text, parseSpecial: false, addSpecial: false)
            guard tokens.count >= ctx else { throw ValidationError("\(file) has \(tokens.count) tokens, fewer than one chunk of \(ctx)") }
            let bos = loaded.tokenizer.vocabulary.addBOS ? loaded.tokenizer.vocabulary.bos : nil
            let result = try Evaluation.perplexity(model: loaded.model, tokens: tokens, context: ctx, maxChunks: chunks, bos: bos) { done, total, ppl in
                FileHandle.standardError.write(Data(String(format: "[%d/%d] %.4f\n", done, total, ppl).utf8))
            }
            writeOut(String(format: "PPL = %.4f\n", result.perplexity))
        }
    }
}

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Teacher-forced top-k log-probabilities for completions.",
        discussion: "Reads JSON lines {\"prompt_ids\": [...], \"completion_ids\": [...]} from stdin. For each, prints {\"top_logprobs\": [...]}: for every completion position, the K most likely next tokens (id, natural-log logprob) given the prompt and the completion before it.")

    @OptionGroup var modelArguments: ModelArguments

    @Option(name: .long, help: "How many tokens to list per position.")
    var topK: Int = 5

    struct Request: Decodable { let prompt_ids: [Int]; let completion_ids: [Int] }
    struct Entry: Encodable { let id: Int; let logprob: Double }
    struct Response: Encodable { let top_logprobs: [[Entry]] }

    func validate() throws {
        if topK < 1 { throw ValidationError("--top-k must be at least 1") }
    }

    func run() throws {
        try reportingErrors {
            let loaded = try modelArguments.load()
            for (number, line) in readStandardInput().split(separator: "\n").enumerated() where !line.allSatisfy(\.isWhitespace) {
                let request: Request
                do {
                    request = try JSONDecoder().decode(Request.self, from: Data(line.utf8))
                } catch {
                    throw ValidationError("line \(number + 1): expected {\"prompt_ids\": [...], \"completion_ids\": [...]}")
                }
                let top = try Evaluation.score(model: loaded.model, prompt: request.prompt_ids, completion: request.completion_ids, topK: min(topK, loaded.model.vocabularySize))
                writeOut(try jsonLine(Response(top_logprobs: top.map { $0.map { Entry(id: $0.id, logprob: $0.logprob) } })))
            }
        }
    }
}
