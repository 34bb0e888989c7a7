import ArgumentParser
import Engine

/// Settings of the serving engine, shared by `batch`, `bench throughput` and `serve`.
struct EngineArguments: ParsableArguments {
    @Option(name: .long, help: "Memory for the KV cache, in MiB, committed at start.")
    var kvMemory: Int = 512

    @Option(name: .long, help: "Positions per KV-cache block.")
    var blockSize: Int = 16

    @Option(name: .long, help: "Most tokens per engine step (decode tokens plus prompt chunks).")
    var tokenBudget: Int = 512

    @Option(name: .long, help: "Most sequences running at once.")
    var maxSequences: Int = 64

    @Flag(name: .long, help: "Turn off the prefix cache (every prompt is computed in full).")
    var noPrefixCache = false

    @Option(name: .long, help: "Longest sequence, prompt and output (default: the model's trained context).")
    var context: Int?

    @Option(name: .long, help: "Host memory, in MiB, for preempted sequences' keys and values (swapped out instead of recomputed when that is faster; 0: recompute).")
    var swapMemory: Int = 1024

    @Option(name: .long, help: "A temporary file, in MiB, for what does not fit in --swap-memory (0: none).")
    var swapFile: Int = 4096

    @Flag(name: .long, help: "Time each operation class of every step (embedding, norms, projections, attention, feed-forward, head, sampling); a few clock reads per layer.")
    var profile = false

    @OptionGroup var speculation: SpeculationArguments

    var configuration: EngineConfiguration {
        var c = EngineConfiguration()
        c.kvCacheBytes = kvMemory << 20
        c.blockSize = blockSize
        c.tokenBudget = tokenBudget
        c.maxRunningSequences = maxSequences
        c.prefixCaching = !noPrefixCache
        c.contextLength = context
        c.speculation = speculation.configuration
        c.swapMemoryBytes = swapMemory << 20
        c.swapFileBytes = swapFile << 20
        return c
    }

    func validate() throws {
        if kvMemory < 1 || kvMemory > 1 << 20 { throw ValidationError("--kv-memory must be between 1 and 1048576 MiB") }
        if !(0...(1 << 24)).contains(swapMemory) || !(0...(1 << 24)).contains(swapFile) { throw ValidationError("--swap-memory and --swap-file must be between 0 and 16777216 MiB") }
        do { try configuration.validate() } catch { throw ValidationError("\(error)") }
    }
}
