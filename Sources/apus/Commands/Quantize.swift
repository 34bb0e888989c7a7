import ArgumentParser
import Foundation
import Models

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Quantize a GGUF model file (from F32, F16 or BF16; requantizing warns) as llama-quantize does.",
        discussion: """
            Types: \(QuantizationMix.allCases.map(\.rawValue).joined(separator: ", ")). The K-quant mixes give \
            attention V and some feed-forward down projections Q6_K, and the output (or tied embedding) Q6_K, as \
            llama-quantize does; a tensor whose row width is not a whole number of blocks falls back to a \
            32-value format. F16, BF16 and F32 store every matrix in that format (decoding a quantized input). \
            All metadata is copied; norms and other vectors are kept as they are.
            """)

    @Argument(help: "The GGUF file to read.")
    var input: String

    @Argument(help: "The GGUF file to write.")
    var output: String

    @Option(name: .long, help: "Target: \(QuantizationMix.allCases.map(\.rawValue).joined(separator: "|")).")
    var type: String

    @Option(name: .long, help: "Threads to quantize with (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(name: .long, help: "Print only the summary, not a line per tensor.")
    var quiet = false

    func validate() throws {
        guard QuantizationMix(name: type) != nil else {
            throw ValidationError("unknown --type '\(type)'; choose one of \(QuantizationMix.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard threads > 0 else { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        try reportingErrors {
            let mix = QuantizationMix(name: type)!
            let summary = try ModelQuantizer.quantize(input: input, output: output, mix: mix, threads: threads) { line in
                if !quiet || line.hasPrefix("warning") { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            }
            writeOut(String(format: "quantized %@ to %@ as %@: %d of %d tensors converted, %.1f MiB -> %.1f MiB, %.1f s\n",
                            input as NSString, output as NSString, mix.rawValue as NSString, summary.converted, summary.tensors,
                            Double(summary.inputBytes) / 1_048_576, Double(summary.outputBytes) / 1_048_576, summary.seconds))
        }
    }
}
