/// What the output of a request must match; every kind becomes a GBNF grammar.
public enum OutputConstraint: Sendable, Equatable {
    /// A grammar in llama.cpp's GBNF dialect.
    case grammar(String)
    /// A JSON Schema, as JSON text.
    case jsonSchema(String)
    /// Any JSON object (OpenAI's `json_object`).
    case jsonObject
    /// A regular expression the whole output matches.
    case regex(String)
    /// Exactly one of these strings.
    case choice([String])
    /// Free output until one of `triggers` appears in it, or the output begins (after
    /// whitespace) with one of `atStart`; from the trigger on, `grammar` (GBNF) matches the
    /// rest (llama.cpp's lazy grammars: a tool call may come, or not).
    case triggered(triggers: [String], atStart: [String], grammar: String)

    public func gbnf() throws -> String {
        switch self {
        case .grammar(let text), .triggered(_, _, let text): return text
        case .jsonSchema(let schema): return try JSONSchemaGrammar.gbnf(schema: schema)
        case .jsonObject: return JSONSchemaGrammar.anyObject
        case .regex(let pattern): return "root ::= " + (try RegexGrammar.gbnf(pattern)) + "\n"
        case .choice(let options):
            guard !options.isEmpty else { throw GrammarError.invalidSchema("a choice needs at least one option") }
            guard options.count <= JSONSchemaGrammar.maxEnumValues else { throw GrammarError.tooLarge("a choice of more than \(JSONSchemaGrammar.maxEnumValues) options") }
            return "root ::= " + JSONSchemaGrammar.literalTrie(options) + "\n"
        }
    }

    /// The texts that switch the grammar on, anywhere and at the start, for a triggered
    /// constraint.
    public var triggers: (anywhere: [String], atStart: [String])? {
        if case .triggered(let t, let s, _) = self { return (t, s) }
        return nil
    }
}
