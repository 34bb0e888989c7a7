import ArgumentParser
import GGUF
import Engine

/// Speculative decoding options, shared by `run`, `batch`, `serve` and `bench`.
struct SpeculationArguments: ParsableArguments {
    @Option(name: .long, help: "Speculative decoding: off, ngram (drafts copied from earlier in the prompt and output; the default) or draft (--draft-model drafts).")
    var speculative: SpeculationConfiguration.Mode?

    @Option(name: .long, help: "A smaller model with the same vocabulary to draft with: a GGUF path or a name from `apus list`. Implies --speculative draft.")
    var draftModel: String?

    @Option(name: .long, help: "Most tokens drafted per sequence and step, 1 to 64.")
    var draftMax: Int = 16

    @Option(name: .long, help: "Continuations prompt lookup drafts at once, 1 to 8: 1 drafts a chain, more a token tree (the chain and branches off it, verified in one pass).")
    var draftTreeWidth: Int = 1

    @Flag(name: .long, help: "Draft --draft-max tokens whenever there are that many, instead of choosing each draft's length from measured acceptance and the cost of verifying.")
    var draftFixed = false

    var mode: SpeculationConfiguration.Mode { speculative ?? (draftModel != nil ? .draft : .ngram) }

    var configuration: SpeculationConfiguration {
        var c = SpeculationConfiguration(mode: mode)
        c.maxDraft = draftMax
        c.adaptive = !draftFixed
        c.treeWidth = draftTreeWidth
        return c
    }

    func validate() throws {
        if mode == .draft && draftModel == nil { throw ValidationError("--speculative draft needs --draft-model") }
        if mode != .draft && draftModel != nil { throw ValidationError("--draft-model drafts only with --speculative draft") }
        if !(1...64).contains(draftMax) { throw ValidationError("--draft-max must be between 1 and 64") }
        if !(1...8).contains(draftTreeWidth) { throw ValidationError("--draft-tree-width must be between 1 and 8") }
    }

    /// The draft model, loaded with the target's threads, kernels and weight residency (the
    /// command's default `residency` unless --weights says); nil unless drafting with one.
    func loadDraft(like modelArguments: ModelArguments, residency: GGUFFile.Residency) throws -> DraftModel? {
        guard mode == .draft, let draftModel else { return nil }
        var arguments = modelArguments
        arguments.model = draftModel
        let loaded = try arguments.load(residency: residency)
        return DraftModel(model: loaded.model, tokenizer: loaded.tokenizer)
    }
}

extension SpeculationConfiguration.Mode: ExpressibleByArgument {}
