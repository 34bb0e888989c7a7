import Foundation
import GGUF
import ModelStore

/// A real model the tests use, with its reference outputs in `../shared/goldens/`.
public struct TestModel: Sendable, Hashable {
    /// The file name in the model cache (as `apus pull` saves it).
    public let fileName: String
    /// The folder of `../shared/goldens/` with this model's reference outputs.
    public let goldensFolder: String
    /// Its name in `ModelCatalog` (`apus pull NAME`).
    public let catalogName: String

    /// SmolLM2-135M-Instruct Q4_1, the default model.
    public static let smolLM2 = TestModel(fileName: "SmolLM2-135M-Instruct.Q4_1.gguf", goldensFolder: "smollm2-135m-instruct-q4_1", catalogName: "smollm2-135m")
    /// Qwen2.5-Coder-0.5B-Instruct Q4_K_M.
    public static let qwen05 = TestModel(fileName: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", goldensFolder: "qwen2.5-coder-0.5b-instruct-q4_k_m",
                                         catalogName: "qwen2.5-coder-0.5b")
    /// Gemma 3 270M (base) Q4_K_M.
    public static let gemma3 = TestModel(fileName: "gemma-3-270m-q4_k_m.gguf", goldensFolder: "gemma-3-270m-q4_k_m", catalogName: "gemma-3-270m")
}

/// Paths and readers shared by the test targets.
public enum TestSupport {
    /// The package root (this file is Tests/TestSupport/TestSupport.swift).
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `../shared/goldens/` beside the checkout.
    public static let goldensRoot = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/goldens")

    /// The default model's goldens, `../shared/goldens/smollm2-135m-instruct-q4_1`.
    public static let goldens = goldens(for: .smolLM2)

    public static func goldens(for model: TestModel) -> URL { goldensRoot.appendingPathComponent(model.goldensFolder) }

    public static let modelFileName = TestModel.smolLM2.fileName

    /// Where `apus` keeps `model`: `$APUS_HOME/models/…`, else `~/.cache/apus/models/…`
    /// (`$APUS_MODEL` overrides the default model's path).
    public static func path(of model: TestModel) -> String {
        let env = ProcessInfo.processInfo.environment
        if model == .smolLM2, let path = env["APUS_MODEL"] { return path }
        let home = env["APUS_HOME"] ?? (NSHomeDirectory() + "/.cache/apus")
        return home + "/models/" + model.fileName
    }

    /// The default model's path.
    public static var modelPath: String { path(of: .smolLM2) }

    nonisolated(unsafe) private static var cachedModels: [TestModel: GGUFFile] = [:]
    private static let lock = NSLock()

    /// A real model, mapped once per test process (the default model unless named). A
    /// model that is not in the cache yet is fetched as `apus pull` fetches it, so the test
    /// command needs no set-up of its own.
    public static func model(_ model: TestModel = .smolLM2) throws -> GGUFFile {
        lock.lock()
        defer { lock.unlock() }
        if let file = cachedModels[model] { return file }
        let path = path(of: model)
        if !FileManager.default.fileExists(atPath: path) {
            _ = try ModelStore.default.ensure(ModelCatalog.entry(named: model.catalogName)!.descriptor)
        }
        let file = try GGUFFile(path: path)
        cachedModels[model] = file
        return file
    }

    /// The objects of a JSON-lines golden file of `model` (the default model unless named).
    public static func jsonLines(_ name: String, model: TestModel = .smolLM2) throws -> [[String: Any]] {
        let text = try String(contentsOf: goldens(for: model).appendingPathComponent(name), encoding: .utf8)
        return try text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }
}
