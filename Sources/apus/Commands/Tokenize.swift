import ArgumentParser
import Foundation

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tokenize UTF-8 text from stdin; print a JSON array of token ids.")

    @Option(name: .long, help: "Path to a GGUF model file (default: the default model).")
    var model: String?

    @Flag(name: .long, help: "Turn the text of special tokens (such as <|im_start|>) into those tokens.")
    var parseSpecial = false

    func run() throws {
        try reportingErrors {
            let loaded = try ModelArguments.parse(model.map { ["--model", $0] } ?? []).load()
            writeOut(try jsonLine(loaded.tokenizer.encode(readStandardInput(), parseSpecial: parseSpecial)))
        }
    }
}

struct Template: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render a conversation through the model's chat template.",
        discussion: "Reads a JSON array of {\"role\", \"content\"} messages from stdin and prints the rendered prompt, with the generation prompt added.")

    @Option(name: .long, help: "Path to a GGUF model file (default: the default model).")
    var model: String?

    struct Message: Decodable { let role: String; let content: String }

    func run() throws {
        try reportingErrors {
            let messages: [Message]
            do {
                messages = try JSONDecoder().decode([Message].self, from: Data(readStandardInput().utf8))
            } catch {
                throw ValidationError("stdin must be a JSON array of {\"role\": ..., \"content\": ...} objects")
            }
            let loaded = try ModelArguments.parse(model.map { ["--model", $0] } ?? []).load()
            writeOut(try loaded.chatTemplate().render(messages.map { (role: $0.role, content: $0.content) }, tokenizer: loaded.tokenizer))
        }
    }
}
