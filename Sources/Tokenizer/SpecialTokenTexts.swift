/// llama.cpp's recognition of special tokens by their text (`llama_vocab::impl::load`,
/// "auto-detect special tokens by text"): converters do not always mark them, so a token
/// whose text conventionally ends a turn (`<|im_end|>`, `</s>`, `<|file_sep|>`, …) ends
/// generation and becomes a control token whatever type the file gives it. That changes
/// more than stopping: a control token is matched in text only with special-token parsing
/// and renders only when asked (Qwen2.5 has a normal `</s>`, Gemma 3 a user-defined one).
struct SpecialTokenTexts {
    // Candidate texts, in llama.cpp's order.
    static let endOfTurn = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
                            "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"]
    static let endOfMessage = ["<|eom_id|>"]
    static let fimPrefix = ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"]
    static let fimSuffix = ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"]
    static let fimMiddle = ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"]
    static let fimPad = ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]
    static let fimRepo = ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"]
    static let fimSeparator = ["<|file_sep|>"]
    static let endOfGeneration = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
                                  "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
                                  "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["]
    /// gpt-oss's channel markers, always rendered.
    static let alwaysRendered = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]

    let types: [Vocabulary.TokenType]
    let eot: Int?
    let eom: Int?
    let endOfGeneration: Set<Int>

    /// `types` as the file gives them; `eos`, `eot`, `eom` and `fim` (the
    /// `fim_pad`/`fim_rep`/`fim_sep` and `fim_pre`/`fim_suf`/`fim_mid` ids) where the
    /// metadata names them. A role the metadata leaves out is found by its texts, the first
    /// candidate present winning (llama.cpp walks an unordered map, so where a vocabulary has
    /// two candidates for one role it may pick either).
    init(types: [Vocabulary.TokenType], pieces: PieceTable, eos: Int?, eot: Int?, eom: Int?,
         fim: (prefix: Int?, suffix: Int?, middle: Int?, pad: Int?, repo: Int?, separator: Int?)) {
        var types = types
        func detect(_ given: Int?, _ candidates: [String]) -> Int? {
            if let given { return given }
            guard let id = candidates.lazy.compactMap({ pieces.id(of: $0) }).first else { return nil }
            types[id] = .control
            return id
        }
        let eot = detect(eot, Self.endOfTurn)
        let eom = detect(eom, Self.endOfMessage)
        _ = detect(fim.prefix, Self.fimPrefix)
        _ = detect(fim.suffix, Self.fimSuffix)
        _ = detect(fim.middle, Self.fimMiddle)
        var eog = Set([detect(fim.pad, Self.fimPad), detect(fim.repo, Self.fimRepo), detect(fim.separator, Self.fimSeparator)].compactMap { $0 })
        for text in Self.endOfGeneration {
            guard let id = pieces.id(of: text) else { continue }
            eog.insert(id)
            types[id] = .control
        }
        for text in Self.alwaysRendered { if let id = pieces.id(of: text) { types[id] = .userDefined } }
        eog.formUnion([eos, eot, eom].compactMap { $0 })
        let has = { (text: String) in pieces.id(of: text).map(eog.contains) ?? false }
        // o200k_harmony and solar-open: `<|end|>` ends a message, not generation.
        if let end = pieces.id(of: "<|end|>"), eog.contains(end),
           (has("<|return|>") && (has("<|call|>") || has("<|calls|>"))) || ((has("<|call|>") || has("<|calls|>")) && has("<|flush|>")) {
            eog.remove(end)
            types[end] = .userDefined
        }
        // Gemma 4 and PLaMo 2 have an ordinary `</s>`.
        if let s = pieces.id(of: "</s>"), eog.contains(s), has("<|tool_response>") || has("<|plamo:eos|>") {
            eog.remove(s)
            types[s] = .normal
        }
        self.types = types
        self.eot = eot
        self.eom = eom
        endOfGeneration = eog
    }
}
