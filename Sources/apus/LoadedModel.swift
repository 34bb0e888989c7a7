import ArgumentParser
import Digest
import Engine
import Foundation
import GGUF
import Kernels
import Models
import ModelStore
import Server
import Tokenizer

/// Options every model-using command shares.
struct ModelArguments: ParsableArguments {
    @Option(name: .customLong("model"), help: "A GGUF file's path, or a model name from `apus list` (fetched on first use). Default: smollm2-135m. `apus serve` takes several, and folders of .gguf files.")
    var models: [String] = []

    /// The one model of a command that runs one (`models` holds at most one by then).
    var model: String? {
        get { models.first }
        set { models = newValue.map { [$0] } ?? [] }
    }

    /// These arguments for each model given (the default model when none is), a folder
    /// standing for every .gguf file in it.
    func each() throws -> [ModelArguments] {
        guard !models.isEmpty else { return [self] }
        return try models.flatMap { m -> [String] in
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: m, isDirectory: &isFolder), isFolder.boolValue else { return [m] }
            let files = try FileManager.default.contentsOfDirectory(atPath: m).filter { $0.hasSuffix(".gguf") }.sorted()
            guard !files.isEmpty else { throw ValidationError("--model \(m) is a folder with no .gguf files") }
            return files.map { URL(fileURLWithPath: m).appendingPathComponent($0).path }
        }.map { m in
            var one = self
            one.model = m
            return one
        }
    }

    @Option(name: .long, help: "Worker threads for the matrix kernels (default: all cores).")
    var threads: Int?

    @Option(name: .long, help: "Arithmetic for activations in quantized products: int8 (llama.cpp's 8-bit path, default) or fp32 (reference).")
    var activations: ActivationPrecision = .int8

    @Option(name: .long, help: "Highest instruction set for the int8 kernels: portable, avx2 or avx512vnni (default: the best this CPU has).")
    var kernels: IntegerKernels.Level?

    @Option(name: .long, help: "Where the weights live: mapped (from the file) or huge-pages (copied at load into 2 MiB pages, which decoding streams 3-7% faster; about 0.3 s per GB at load). Default: huge-pages for serve, batch and the benchmarks, which decode long enough to repay the copy; mapped for the rest (roofline too: its bandwidth probe reads 4 KiB pages).")
    var weights: GGUFFile.Residency?

    @Option(name: .long, help: "A Jinja chat template file to use instead of the model's own (tokenizer.chat_template).")
    var chatTemplate: String?

    @OptionGroup var kvCache: KVCacheArguments

    func validate() throws {
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be between 1 and 1024") }
    }

    /// The name from `apus list` that picked the model (the default model's when none was given); nil for a path.
    var catalogName: String? {
        guard let model else { return ModelCatalog.defaultName }
        return ModelCatalog.entry(named: model) != nil && !FileManager.default.fileExists(atPath: model) ? model : nil
    }

    /// The model file's path: a named model (fetched if needed), a path, or the default model.
    func resolvedPath() throws -> String {
        guard models.count <= 1 else { throw ValidationError("--model is given \(models.count) times; only `apus serve` serves several models") }
        var isFolder: ObjCBool = false
        if let model, FileManager.default.fileExists(atPath: model, isDirectory: &isFolder), isFolder.boolValue {
            throw ValidationError("--model \(model) is a folder; only `apus serve` serves a folder of models")
        }
        if let model {
            if let entry = ModelCatalog.entry(named: model), !FileManager.default.fileExists(atPath: model) {
                return try ModelStore.default.ensure(entry.descriptor).path
            }
            return model
        }
        return try ModelStore.default.ensure(.smolLM2).path
    }

    /// `pool`: worker threads shared with other models (`apus serve` with several);
    /// `residency`: where the weights live unless --weights says.
    func load(pool: ThreadPool? = nil, residency: GGUFFile.Residency = .mapped) throws -> LoadedModel {
        if let kernels { IntegerKernels.limit(to: kernels) }
        let templateOverride = try templateOverride()
        let path = try resolvedPath()
        let file = try GGUFFile(path: path, residency: weights ?? residency)
        var options = ModelOptions(precision: activations, pool: pool, kvType: kvCache.type)
        if let threads { options.threads = threads }
        let model = try ModelRegistry.load(file, options: options)
        return LoadedModel(file: file, model: model, tokenizer: try Tokenizer(file: file), templateOverride: templateOverride,
                           kvIdentity: try Self.kvIdentity(of: path, precision: activations, keyTransform: model.kvShape.keyTransformDigest))
    }

    /// What two workers' keys and values agree on only when they run the same file with the
    /// same arithmetic: the first 8 bytes of the SHA-256 of the file's size, its first and
    /// last MiB (its metadata and tokenizer; its last tensors), the activation precision and
    /// the digest of the key transforms a quantized cache fitted at load.
    static func kvIdentity(of path: String, precision: ActivationPrecision, keyTransform: UInt64) throws -> UInt64 {
        guard let file = FileHandle(forReadingAtPath: path) else { throw ValidationError("cannot read \(path)") }
        defer { try? file.close() }
        let size = try file.seekToEnd()
        var sha = SHA256()
        sha.update(Array(String(size).utf8) + Array(precision.rawValue.utf8) + Array(String(keyTransform).utf8))
        try file.seek(toOffset: 0)
        sha.update(Array(try file.read(upToCount: 1 << 20) ?? Data()))
        try file.seek(toOffset: size > 1 << 20 ? size - (1 << 20) : 0)
        sha.update(Array(try file.read(upToCount: 1 << 20) ?? Data()))
        return sha.digest().prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// `--chat-template`, read and parsed before the model loads, so that a bad file stops
    /// the command at once with its line and column.
    func templateOverride() throws -> ChatTemplate? {
        guard let chatTemplate else { return nil }
        let source: String
        do {
            source = try String(contentsOfFile: chatTemplate, encoding: .utf8)
        } catch {
            throw ValidationError("cannot read --chat-template \(chatTemplate): \((error as NSError).localizedDescription)")
        }
        do {
            return try ChatTemplate(source)
        } catch {
            throw ValidationError("--chat-template \(chatTemplate): \(error)")
        }
    }
}

extension ActivationPrecision: ExpressibleByArgument {}
extension GGUFFile.Residency: ExpressibleByArgument {}
extension Pooling: ExpressibleByArgument {}
extension WorkerRole: ExpressibleByArgument {}

extension IntegerKernels.Level: ExpressibleByArgument {
    /// The case names, which `init(argument:)` takes, for the help and its errors (not the
    /// raw values).
    public static var allValueStrings: [String] { allCases.map { "\($0)" } }

    public init?(argument: String) {
        guard let level = Self.allCases.first(where: { "\($0)" == argument }) else { return nil }
        self = level
    }
}

struct LoadedModel {
    let file: GGUFFile
    let model: any LanguageModel
    let tokenizer: Tokenizer
    /// `--chat-template`'s template, which replaces the file's.
    let templateOverride: ChatTemplate?
    let kvIdentity: UInt64

    func chatTemplate() throws -> ChatTemplate {
        if let templateOverride { return templateOverride }
        guard let template = try ChatTemplate(metadata: file.metadata) else {
            throw ValidationError("the model has no chat template (tokenizer.chat_template); give one with --chat-template FILE")
        }
        return template
    }
}
