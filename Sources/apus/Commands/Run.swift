import ArgumentParser
import Engine
import Foundation
import Server

/// Options for sampling and stopping, shared by `run` and `chat`.
struct SamplingArguments: ParsableArguments {
    @Option(name: .long, help: "Most tokens to generate.")
    var maxTokens: Int = 256

    @Option(name: .long, help: "Sampling temperature; 0 picks the most likely token every time (greedy).")
    var temperature: Float = 0.8

    @Option(name: .long, help: "Sample only among the K most likely tokens (0: off).")
    var topK: Int = 40

    @Option(name: .long, help: "Sample only among the most likely tokens whose probabilities add up to P (1: off).")
    var topP: Float = 0.95

    @Option(name: .long, help: "Drop tokens less likely than P times the most likely one (0: off).")
    var minP: Float = 0.05

    @Option(name: .long, help: "Penalise tokens seen in the last 64 (1: off).")
    var repeatPenalty: Float = 1.0

    @Option(name: .long, help: "OpenAI presence penalty, -2 to 2.")
    var presencePenalty: Float = 0

    @Option(name: .long, help: "OpenAI frequency penalty, -2 to 2.")
    var frequencyPenalty: Float = 0

    @Option(name: .long, help: "Seed for reproducible sampling (default: random).")
    var seed: UInt64?

    @Option(name: .long, help: "Stop when this text is generated (repeatable).")
    var stop: [String] = []

    @Option(name: .long, help: "Context length in tokens (default: 4096, at most the model's).")
    var context: Int = 4096

    func validate() throws {
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1") }
        if context < 2 || context > 1 << 20 { throw ValidationError("--context must be between 2 and 1048576") }
        try parameters.sampling.validate()
    }

    var parameters: GenerationParameters {
        var p = GenerationParameters()
        p.maxTokens = maxTokens
        p.stopStrings = stop
        p.sampling.temperature = temperature
        p.sampling.topK = topK
        p.sampling.topP = topP
        p.sampling.minP = minP
        p.sampling.repetitionPenalty = repeatPenalty
        p.sampling.presencePenalty = presencePenalty
        p.sampling.frequencyPenalty = frequencyPenalty
        p.sampling.seed = seed
        return p
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a continuation of a prompt, streaming it to stdout.",
        discussion: "PROMPT is tokenized with special-token parsing on, as llama.cpp's tools do, so an already-rendered chat prompt works; --chat renders it as a user message through the model's chat template instead. The request runs through the serving engine, speculative decoding included.")

    @OptionGroup var modelArguments: ModelArguments
    @OptionGroup var sampling: SamplingArguments
    @OptionGroup var speculation: SpeculationArguments

    @Flag(name: .long, help: "Render PROMPT as a user message through the model's chat template.")
    var chat = false

    @Option(name: .long, help: "Constrain the output to the JSON schema in this file.")
    var jsonSchema: String?

    @Option(name: .long, help: "Constrain the output to the GBNF grammar in this file (llama.cpp's format).")
    var grammar: String?

    @Flag(name: .long, help: "Print one JSON object at the end (text, tokens, prompt_tokens, finish_reason, timings) instead of streaming.")
    var json = false

    @Argument(help: "The prompt.")
    var prompt: String

    struct Output: Encodable {
        let text: String
        let tokens: [Int]
        let prompt_tokens: Int
        let finish_reason: String
        let timings: OpenAIResponse.Timings
    }

    func validate() throws {
        if jsonSchema != nil && grammar != nil { throw ValidationError("give --json-schema or --grammar, not both") }
    }

    func run() async throws {
        try await reportingErrors {
            var parameters = sampling.parameters
            if let path = jsonSchema { parameters.constraint = .jsonSchema(try String(contentsOfFile: path, encoding: .utf8)) }
            if let path = grammar { parameters.constraint = .grammar(try String(contentsOfFile: path, encoding: .utf8)) }
            let loaded = try modelArguments.load()
            let text = chat ? try loaded.chatTemplate().render([(role: "user", content: prompt)], tokenizer: loaded.tokenizer) : prompt
            let tokens = loaded.tokenizer.encode(text, parseSpecial: true)
            var configuration = EngineConfiguration()
            let context = min(sampling.context, loaded.model.trainedContextLength)
            configuration.contextLength = context
            // One sequence: room for the whole context and a draft past its end, and for each
            // branch of a token tree its own blocks from the last token's on.
            let branches = speculation.draftTreeWidth - 1
            configuration.kvCacheBytes = (context + speculation.draftMax + configuration.blockSize
                                          + branches * (speculation.draftMax + 2 * configuration.blockSize)) * loaded.model.kvBytesPerPosition
            configuration.speculation = speculation.configuration
            let engine = try Engine(model: loaded.model, tokenizer: loaded.tokenizer, configuration: configuration,
                                    draftModel: try speculation.loadDraft(like: modelArguments, residency: .mapped))
            defer { engine.shutdown() }
            let request = GenerationRequest(prompt: tokens, parameters: parameters)
            try engine.validate(request)
            var generated: [Int] = [], output = "", finish = FinishReason.length
            var metrics: RequestMetrics?
            for try await o in engine.generate(request) {
                generated += o.tokens
                output += o.text
                if !json { writeOut(o.text) }
                if let r = o.finishReason { finish = r }
                if let m = o.metrics { metrics = m }
            }
            guard let m = metrics else { throw ValidationError("the engine ended the request without its metrics") }
            if json {
                writeOut(try jsonLine(Output(text: output, tokens: generated, prompt_tokens: tokens.count, finish_reason: finish.rawValue,
                                             timings: OpenAIResponse.Timings([m]))))
            } else {
                writeOut("\n")
            }
        }
    }
}
