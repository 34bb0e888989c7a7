import ArgumentParser
import Engine
import Foundation

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with the model in the terminal.",
        discussion: "Type a message and press Enter. /reset starts a new conversation; /quit (or end of input) leaves. The KV cache is kept between turns, so only the new part of the conversation is computed.")

    @OptionGroup var modelArguments: ModelArguments
    @OptionGroup var sampling: SamplingArguments

    @Option(name: .long, help: "A system message to start the conversation with.")
    var system: String?

    func run() throws {
        try reportingErrors {
            let loaded = try modelArguments.load()
            let template = try loaded.chatTemplate()
            let generator = Generator(model: loaded.model, tokenizer: loaded.tokenizer, contextLength: sampling.context)
            var messages: [(role: String, content: String)] = system.map { [(role: "system", content: $0)] } ?? []
            var cache = loaded.model.makeCache(capacity: generator.contextLength)
            var cached: [Int] = []
            FileHandle.standardError.write(Data("apus chat: type a message; /reset or /quit\n".utf8))
            while true {
                FileHandle.standardError.write(Data("> ".utf8))
                guard let line = readLine() else { break }
                let input = line.trimmingCharacters(in: .whitespaces)
                if input.isEmpty { continue }
                if input == "/quit" || input == "/exit" { break }
                if input == "/reset" {
                    messages = system.map { [(role: "system", content: $0)] } ?? []
                    cache = loaded.model.makeCache(capacity: generator.contextLength)
                    cached = []
                    continue
                }
                messages.append((role: "user", content: input))
                let prompt = loaded.tokenizer.encode(try template.render(messages, tokenizer: loaded.tokenizer), parseSpecial: true)
                // Keep the part of the cache that the new prompt shares with the last one.
                let common = zip(cached, prompt).prefix { $0 == $1 }.count
                cache.truncate(to: min(common, prompt.count - 1))
                do {
                    let result = try generator.generate(prompt: prompt, parameters: sampling.parameters, cache: cache) { piece in
                        writeOut(piece)
                        return true
                    }
                    writeOut("\n")
                    messages.append((role: "assistant", content: result.text))
                    cached = prompt + result.tokens.dropLast()
                } catch let error as GenerationError {
                    FileHandle.standardError.write(Data("apus: \(error); use /reset to start over\n".utf8))
                    messages.removeLast()
                }
            }
        }
    }
}
