import Foundation
import GGUF

/// Paths and readers shared by the test targets.
public enum TestSupport {
    /// The package root (this file is Tests/TestSupport/TestSupport.swift).
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `../shared/goldens/smollm2-135m-instruct-q4_1` beside the checkout.
    public static let goldens = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/goldens/smollm2-135m-instruct-q4_1")

    public static let modelFileName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    /// The default model, where `apus` keeps it: `$APUS_MODEL`, else
    /// `$APUS_HOME/models/…`, else `~/.cache/apus/models/…`.
    public static var modelPath: String {
        let env = ProcessInfo.processInfo.environment
        if let path = env["APUS_MODEL"] { return path }
        let home = env["APUS_HOME"] ?? (NSHomeDirectory() + "/.cache/apus")
        return home + "/models/" + modelFileName
    }

    struct MissingModel: Error, CustomStringConvertible {
        let path: String
        var description: String { "the default model is not at \(path); run `swift run -c release apus pull` once" }
    }

    nonisolated(unsafe) private static var cachedModel: GGUFFile?
    private static let lock = NSLock()

    /// The real model, mapped once per test process.
    public static func model() throws -> GGUFFile {
        lock.lock()
        defer { lock.unlock() }
        if let cachedModel { return cachedModel }
        guard FileManager.default.fileExists(atPath: modelPath) else { throw MissingModel(path: modelPath) }
        let file = try GGUFFile(path: modelPath)
        cachedModel = file
        return file
    }

    /// The objects of a JSON-lines golden file.
    public static func jsonLines(_ name: String) throws -> [[String: Any]] {
        let text = try String(contentsOf: goldens.appendingPathComponent(name), encoding: .utf8)
        return try text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }
}
