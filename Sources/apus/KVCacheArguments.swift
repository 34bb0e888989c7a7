import ArgumentParser
import Kernels
import Models

/// How the KV cache stores keys and values: `--kv-type` for both, and the keys' or the
/// values' own where they differ (llama.cpp's `-ctk` and `-ctv`, which are accepted too).
struct KVCacheArguments: ParsableArguments {
    @Option(name: .long, help: "How the KV cache stores keys and values: f16 (default), q8_0 (half the memory), q4_0 (about 0.28) or kivi4 (keys per channel, values q4_0: about 0.33).")
    var kvType: KVCacheFormat = .f16

    @Option(name: [.customLong("kv-type-k"), .customLong("cache-type-k"), .customLong("ctk", withSingleDash: true)],
            help: "How it stores keys, where not as --kv-type says. Keys carry nearly all of a quantized cache's error: f16, q8_0 or kivi4 keys with q4_0 values keep most of the saving.")
    var kvTypeK: KVCacheFormat?

    @Option(name: [.customLong("kv-type-v"), .customLong("cache-type-v"), .customLong("ctv", withSingleDash: true)],
            help: "How it stores values, where not as --kv-type says (f16, q8_0 or q4_0).")
    var kvTypeV: KVCacheFormat?

    /// `--kv-type kivi4` is KIVI's pairing: keys per channel, values per position (Q4_0).
    var type: KVCacheType { KVCacheType(keys: kvTypeK ?? kvType, values: kvTypeV ?? (kvType.isPerChannel ? .q4_0 : kvType)) }

    func validate() throws {
        if kvTypeV?.isPerChannel == true { throw ValidationError("\(ModelError.perChannelValues)") }
    }
}

extension KVCacheFormat: ExpressibleByArgument {
    public init?(argument: String) { self.init(name: argument) }
}
