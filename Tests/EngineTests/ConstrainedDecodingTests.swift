@testable import Engine
import Foundation
import Models
import TestSupport
import Tokenizer
import XCTest

/// Constrained decoding through the engine with a real model (Qwen2.5-Coder-0.5B-Instruct):
/// whatever the model would rather say, the output matches the schema, also when
/// `max_tokens` cuts it short.
final class ConstrainedDecodingTests: XCTestCase {
    nonisolated(unsafe) static var loaded: (model: any LanguageModel, tokenizer: Tokenizer, template: ChatTemplate)?

    func load() throws -> (model: any LanguageModel, tokenizer: Tokenizer, template: ChatTemplate) {
        if let loaded = Self.loaded { return loaded }
        let file = try TestSupport.model(.qwen05)
        let loaded = (try ModelRegistry.load(file), try Tokenizer(file: file), try ChatTemplate(metadata: file.metadata)!)
        Self.loaded = loaded
        return loaded
    }

    /// Schemas written for this test only (the grammar tests use others).
    static let schemas = [
        #"{"type":"object","properties":{"city":{"type":"string"},"population":{"type":"integer","minimum":0},"landmarks":{"type":"array","items":{"type":"string","maxLength":30},"minItems":2,"maxItems":4}},"required":["city","population","landmarks"]}"#,
        #"{"type":"object","properties":{"order":{"type":"object","properties":{"id":{"type":"string","pattern":"^ORD-[0-9]{4}$"},"lines":{"type":"array","items":{"type":"object","properties":{"item":{"type":"string"},"qty":{"type":"integer","minimum":1,"maximum":9}},"required":["item","qty"]},"minItems":1}},"required":["id","lines"]},"paid":{"type":"boolean"},"coupon":{"type":["string","null"]}},"required":["order","paid"]}"#,
        #"{"type":"object","properties":{"answer":{"anyOf":[{"type":"number"},{"type":"object","properties":{"low":{"type":"number"},"high":{"type":"number"}},"required":["low","high"]}]},"confidence":{"enum":["low","medium","high"]},"note":{"type":"string"}},"required":["answer","confidence"]}"#,
    ]
    static let prompts = [
        "Describe Paris as JSON.",
        "Write a JSON order for two pizzas and a soda, paid in full.",
        "How tall is Mount Everest in metres? Answer in JSON with your confidence.",
    ]

    func request(_ prompt: String, schema: String?, maxTokens: Int, temperature: Float, seed: UInt64) throws -> GenerationRequest {
        let (_, tokenizer, template) = try load()
        let text = try template.render([(role: "user", content: prompt)], tokenizer: tokenizer)
        var p = GenerationParameters()
        p.maxTokens = maxTokens
        p.sampling.temperature = temperature
        p.sampling.seed = seed
        p.constraint = schema.map { .jsonSchema($0) } ?? .jsonObject
        return GenerationRequest(prompt: tokenizer.encode(text, parseSpecial: true), parameters: p)
    }

    func run(_ requests: [GenerationRequest], speculation: SpeculationConfiguration.Mode = .off) throws -> [(text: String, reason: FinishReason?, tokens: Int)] {
        let (model, tokenizer, _) = try load()
        var c = EngineConfiguration()
        c.contextLength = 1024
        c.speculation.mode = speculation
        let core = try EngineCore(model: model, tokenizer: tokenizer, configuration: c)
        var out = Array(repeating: (text: "", reason: FinishReason?.none, tokens: 0), count: requests.count)
        for (i, r) in requests.enumerated() { try core.add(id: UInt64(i), r) }
        while core.hasWork {
            for e in try core.step() {
                out[Int(e.request)].text += e.output.text
                out[Int(e.request)].tokens += e.output.tokens.count
                if let r = e.output.finishReason { out[Int(e.request)].reason = r }
            }
        }
        let stats = core.currentStatistics()
        XCTAssertGreaterThan(stats.constrainedTokens, 0)
        print("masked \(stats.constrainedTokens) tokens, \(String(format: "%.1f", stats.maskSeconds / Double(max(1, stats.constrainedTokens)) * 1e6)) µs each")
        return out
    }

    /// A control token a request shows (a tool-call format's marker, such as Mistral's
    /// `[TOOL_CALLS]`) is text to its grammar and to its output; one it does not show is
    /// neither.
    func testAShownControlTokenIsTextToTheGrammarAndToTheOutput() throws {
        let (_, tokenizer, _) = try load()
        let marker = try XCTUnwrap(tokenizer.vocabulary.id(of: "<|im_start|>"))
        XCTAssertEqual(tokenizer.vocabulary.types[marker], .control)
        let grammar = try Grammar(gbnf: #"root ::= "<|im_start|>" [a-z]+"#)
        let hidden = try GrammarAutomaton(grammar: grammar, trie: TokenTrie(tokenizer: tokenizer))
        let shown = try GrammarAutomaton(grammar: grammar, trie: TokenTrie(tokenizer: tokenizer, shownControlTokens: [marker]))
        func allows(_ a: GrammarAutomaton, _ token: Int) -> Bool {
            guard case .mask(let words) = a.allowed(a.initial, budget: 100) else { return false }
            return words[token >> 6] >> (token & 63) & 1 == 1
        }
        XCTAssertFalse(allows(hidden, marker))
        XCTAssertTrue(allows(shown, marker))
        XCTAssertTrue(shown.isAccepting(shown.next(shown.next(shown.initial, token: marker), bytes: Array("yes".utf8))))
        var text = TextStream(tokenizer: tokenizer, stopStrings: [], shownControlTokens: [marker])
        var plain = TextStream(tokenizer: tokenizer, stopStrings: [])
        XCTAssertEqual(text.append(marker), "<|im_start|>")
        XCTAssertEqual(plain.append(marker), "")
    }

    /// Every output validates, uncapped and under caps of 25–40 tokens (a cap below the
    /// schema's shortest valid output is left out: the order takes 26 of Qwen's tokens, so no
    /// output fits 25); where the cap bit, the finish reason says so.
    func testOutputsValidateUnderTightCaps() throws {
        let (_, tokenizer, _) = try load()
        let trie = TokenTrie(tokenizer: tokenizer)
        var floors: [Int] = []
        for schema in Self.schemas {
            let a = try GrammarAutomaton(grammar: Grammar(gbnf: JSONSchemaGrammar.gbnf(schema: schema)), trie: trie)
            floors.append(a.finishingTokens(a.initial).count)
        }
        XCTAssertEqual(floors.filter { $0 <= 25 }.count, 2, "two schemas fit a cap of 25: \(floors)")
        XCTAssertLessThanOrEqual(floors.max()!, 28, "a valid output fits every other cap")
        var requests: [GenerationRequest] = []
        var expected: [(schema: String, cap: Int)] = []
        for (i, schema) in Self.schemas.enumerated() {
            for (cap, temperature) in [(25, Float(0.9)), (28, 0), (33, 0.8), (40, 1.0), (160, 0)] where cap >= floors[i] {
                requests.append(try request(Self.prompts[i], schema: schema, maxTokens: cap, temperature: temperature, seed: UInt64(cap)))
                expected.append((schema, cap))
            }
        }
        let results = try run(requests)
        var capped = 0
        for (result, (schemaText, cap)) in zip(results, expected) {
            let schema = SchemaValidator.parse(schemaText) as! [String: Any]
            guard let value = SchemaValidator.parse(result.text) else { XCTFail("not JSON (cap \(cap)): \(result.text)"); continue }
            XCTAssertEqual(SchemaValidator.errors(value, schema, root: schema), [], "cap \(cap): \(result.text)")
            XCTAssertLessThanOrEqual(result.tokens, cap)
            if result.reason == .length { capped += 1; XCTAssertEqual(result.tokens, cap) }
        }
        XCTAssertGreaterThan(capped, 3, "the caps bit and the outputs still validate")
    }

    /// An output that takes the grammar past a limit of its automaton fails the request
    /// with the limit named, instead of going on unconstrained or ending as if complete.
    func testAnAutomatonLimitFailsTheRequestLoudly() throws {
        let (model, tokenizer, _) = try load()
        var c = EngineConfiguration()
        c.contextLength = 512
        let core = try EngineCore(model: model, tokenizer: tokenizer, configuration: c)
        core.grammars.maxNesting = 5
        var p = GenerationParameters()
        p.maxTokens = 30
        p.sampling = .greedy
        p.constraint = .grammar(#"root ::= "(" root ")" | "x""#)
        let open = tokenizer.encode("(", addSpecial: false)
        XCTAssertEqual(open.count, 1)
        p.sampling.logitBias = [open[0]: 100]
        try core.add(id: 7, GenerationRequest(prompt: tokenizer.encode("Brackets:", addSpecial: false), parameters: p))
        var failure: (any Error)?
        var tokens = 0
        while core.hasWork {
            for e in try core.step() {
                tokens += e.output.tokens.count
                if let error = e.error { failure = error; XCTAssertTrue(e.finished) }
            }
        }
        XCTAssertEqual(failure as? GrammarError, .tooLarge("the output nests the grammar's rules deeper than 5"))
        XCTAssertLessThan(tokens, 8, "the request stopped at the limit")
        XCTAssertEqual(core.currentStatistics().runningSequences, 0)
    }

    /// `json_object` always parses; speculative decoding verifies drafts against the masked
    /// distribution, so it changes nothing about validity (and greedy output not at all).
    func testJSONObjectParsesAndSpeculationKeepsOutputs() throws {
        let requests = try Self.prompts.map { try request($0, schema: nil, maxTokens: 30, temperature: 0, seed: 1) }
        let plain = try run(requests)
        for r in plain {
            XCTAssertTrue(SchemaValidator.parse(r.text) is [String: Any], r.text)
        }
        let speculative = try run(requests, speculation: .ngram)
        XCTAssertEqual(speculative.map(\.text), plain.map(\.text))
    }
}
