import ArgumentParser
import Foundation

@main
struct Apus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apus",
        abstract: "A Swift-native LLM inference engine: GGUF models on the CPU.",
        discussion: "Without --model, commands use SmolLM2-135M-Instruct (Q4_1), fetched on first use into $APUS_HOME or ~/.cache/apus.",
        subcommands: [Run.self, Chat.self, Tokenize.self, Template.self, Perplexity.self, Score.self, Batch.self, Serve.self, RouterCommand.self, Bench.self, RooflineCommand.self, Inspect.self, Quantize.self, Pull.self, List.self]
    )
}

/// Prints an error the way every command reports one, then exits non-zero.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("apus: error: \(error)\n".utf8))
    return ExitCode(1)
}

/// Runs a command body, turning any thrown error into a clean message and exit status.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        throw fail(error)
    }
}

func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        throw fail(error)
    }
}

func readStandardInput() -> String {
    String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
}

func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

func jsonLine<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self) + "\n"
}
