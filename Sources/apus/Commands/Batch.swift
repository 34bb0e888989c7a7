import ArgumentParser
import Engine
import Foundation
import Server

struct Batch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a file of requests through the serving engine, all sharing its batches.",
        discussion: """
            Each input line is a JSON object with the field names of OpenAI's requests: `prompt` (a string, \
            tokenized as `apus run` does it, special tokens parsed; or an array of token ids) or `messages` (rendered \
            through the model's chat template), and `max_tokens`, `temperature`, `top_p`, `top_k`, `min_p`, `seed`, \
            `stop`, `n`, `presence_penalty`, `frequency_penalty`, `repetition_penalty`, `ignore_eos`, `logprobs`, \
            `priority`. Defaults are OpenAI's (temperature 1, top_p 1); without max_tokens, generation may run to \
            the end of the context. Each output line, in input order, has `text`, `tokens` (generated ids, ending \
            with the end-of-generation token when one stopped generation, as in `apus run --json`), \
            `finish_reason`, token counts, and `choices` with every sample; a line that cannot be run gets `error`.
            """)

    @OptionGroup var modelArguments: ModelArguments
    @OptionGroup var engineArguments: EngineArguments

    @Option(name: .long, help: "JSON-lines file of requests.")
    var input: String

    @Option(name: .long, help: "JSON-lines file for the results (default: standard output).")
    var output: String?

    struct Choice: Encodable {
        var index: Int
        var text = ""
        var tokens: [Int] = []
        var finish_reason: String?
        var logprobs: [Logprob]?
    }

    struct Logprob: Encodable {
        struct Alternative: Encodable {
            let token: Int
            let logprob: Double
        }
        let token: Int
        let logprob: Double
        let top_logprobs: [Alternative]
    }

    struct Result: Encodable {
        var index: Int
        var text: String?
        var tokens: [Int]?
        var finish_reason: String?
        var prompt_tokens: Int?
        var completion_tokens: Int?
        var cached_prompt_tokens: Int?
        var choices: [Choice]?
        var error: String?
    }

    func run() async throws {
        try await reportingErrors {
            let loaded = try modelArguments.load(residency: .hugePages)
            let engine = try Engine(model: loaded.model, tokenizer: loaded.tokenizer, configuration: engineArguments.configuration,
                                    draftModel: try engineArguments.speculation.loadDraft(like: modelArguments, residency: .hugePages))
            defer { engine.shutdown() }
            let lines = try String(contentsOfFile: input, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
            let requestLines = lines.indices.filter { !lines[$0].isEmpty }
            var sink = FileHandle.standardOutput
            if let output {
                guard FileManager.default.createFile(atPath: output, contents: nil), let file = FileHandle(forWritingAtPath: output) else {
                    throw ValidationError("cannot write \(output)")
                }
                sink = file
            }

            // Results are written in input order as soon as every earlier one is done; at
            // most `window` requests are in the engine at once, so a huge file is streamed.
            let window = max(4 * engineArguments.maxSequences, 64)
            var pending: [Int: Result] = [:]
            var nextToWrite = 0
            try await withThrowingTaskGroup(of: (Int, Result).self) { group in
                func write(_ position: Int, _ result: Result) throws {
                    pending[position] = result
                    while let r = pending.removeValue(forKey: nextToWrite) {
                        sink.write(Data(try jsonLine(r).utf8))
                        nextToWrite += 1
                    }
                }
                for (position, index) in requestLines.enumerated() {
                    if position >= window, let (p, r) = try await group.next() { try write(p, r) }
                    let line = lines[index]
                    group.addTask { (position, await Self.run(line: line, index: index, engine: engine, loaded: loaded)) }
                }
                for try await (p, r) in group { try write(p, r) }
            }
        }
    }

    static func run(line: String, index: Int, engine: Engine, loaded: LoadedModel) async -> Result {
        var result = Result(index: index)
        do {
            guard let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw RequestFieldError(param: nil, "line \(index + 1) is not a JSON object")
            }
            let parsed = try OpenAIRequest(json: json, kind: json["messages"] == nil ? .completion : .chat)
            let requests = try parsed.generationRequests(tokenizer: loaded.tokenizer, chatTemplate: loaded.chatTemplate, contextLength: engine.contextLength)
            guard let request = requests.first, requests.count == 1 else {
                throw RequestFieldError(param: "prompt", "one prompt per line, got \(requests.count)")
            }
            var choices = (0..<request.samples).map { Choice(index: $0, logprobs: request.logprobs == nil ? nil : []) }
            for try await o in engine.generate(request) {
                choices[o.index].text += o.text
                choices[o.index].tokens += o.tokens
                choices[o.index].logprobs? += o.logprobs.map { lp in
                    Logprob(token: lp.chosen.token, logprob: lp.chosen.logprob, top_logprobs: lp.top.map { .init(token: $0.token, logprob: $0.logprob) })
                }
                if let reason = o.finishReason { choices[o.index].finish_reason = reason.rawValue }
                if let m = o.metrics {
                    result.prompt_tokens = m.promptTokens
                    result.completion_tokens = m.completionTokens
                    result.cached_prompt_tokens = m.cachedPromptTokens
                }
            }
            result.text = choices[0].text
            result.tokens = choices[0].tokens
            result.finish_reason = choices[0].finish_reason
            result.choices = choices
        } catch {
            result.error = "\(error)"
        }
        return result
    }
}
