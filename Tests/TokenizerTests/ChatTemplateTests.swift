import Foundation
import GGUF
import TestSupport
import Tokenizer
import XCTest

final class ChatTemplateTests: XCTestCase {
    func render(_ source: String, _ globals: [String: TemplateValue] = [:], messages: [TemplateValue] = []) throws -> String {
        try ChatTemplate(source).render(messages: messages, addGenerationPrompt: false, extra: globals)
    }

    func testGoldenRenderingsOfTheModelsOwnTemplate() throws {
        let file = try TestSupport.model()
        let template = try XCTUnwrap(try ChatTemplate(metadata: file.metadata))
        let tokenizer = try Tokenizer(file: file)
        let cases = try TestSupport.jsonLines("chat_template.jsonl")
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let messages = (c["messages"] as! [[String: Any]]).map { (role: $0["role"] as! String, content: $0["content"] as! String) }
            let rendered = try template.render(messages, tokenizer: tokenizer, addGenerationPrompt: c["add_generation_prompt"] as? Bool ?? true)
            XCTAssertEqual(rendered, c["rendered"] as! String)
        }
    }

    func testStatementsAndLoopVariables() throws {
        XCTAssertEqual(try render("{% for x in xs %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}",
                                  ["xs": .array([.string("a"), .string("b"), .string("c")])]), "1a,2b,3c")
        XCTAssertEqual(try render("{% if n > 2 %}big{% elif n == 2 %}two{% else %}small{% endif %}", ["n": .int(2)]), "two")
        XCTAssertEqual(try render("{% set y = 'p' ~ 1 + 2 %}{{ y }}"), "p3")
        XCTAssertEqual(try render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"), "6")
        XCTAssertEqual(try render("{{ d['k'] }}{{ d.k }}{{ xs[-1] }}{{ xs[1:] | length }}",
                                  ["d": .dict([("k", .string("v"))]), "xs": .array([.int(1), .int(2), .int(3)])]), "vv32")
        XCTAssertEqual(try render("{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'x' not in d }} {{ none is none }} {{ u is defined }}",
                                  ["d": .dict([])]), "True True True True False")
        XCTAssertEqual(try render("{{ '  hi  ' | trim | upper }}{{ 'X' | lower }}{{ [1, 'a'] | tojson }}{{ d | tojson }}",
                                  ["d": .dict([("a", .string("é\n")), ("b", .bool(true))])]), "HIx[1, \"a\"]{\"a\": \"é\\n\", \"b\": true}")
        XCTAssertEqual(try render("{{ 'a' if x else 'b' }}{{ x or 'y' }}{{ 7 // 2 }}{{ 7 % 3 }}", ["x": .bool(false)]), "by31")
    }

    func testWhitespaceControl() throws {
        XCTAssertEqual(try render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc")
        // trim_blocks and lstrip_blocks, as Hugging Face renders chat templates.
        XCTAssertEqual(try render("{% for x in xs %}\n    {% if x %}\n{{ x }}\n    {% endif %}\n{% endfor %}", ["xs": .array([.int(1), .int(2)])]), "1\n2\n")
    }

    func testRaiseExceptionAndUnsupportedConstructsAreErrors() throws {
        XCTAssertThrowsError(try render("{{ raise_exception('roles must alternate') }}")) {
            XCTAssertEqual(($0 as? TemplateError)?.message, "raise_exception: roles must alternate")
        }
        XCTAssertThrowsError(try ChatTemplate("{% include 'x' %}")) {
            XCTAssertEqual(($0 as? TemplateError)?.message, "unsupported statement 'include'")
        }
        XCTAssertThrowsError(try render("{{ x | wordwrap }}")) {
            XCTAssertEqual(($0 as? TemplateError)?.message, "unsupported filter 'wordwrap'")
        }
        XCTAssertThrowsError(try ChatTemplate("{% if x %}never closed"))
        XCTAssertThrowsError(try render("{{ cycler() }}")) {
            XCTAssertEqual(($0 as? TemplateError)?.message, "unknown function 'cycler'")
        }
    }

    /// Hostile templates from an untrusted file end in an error, quickly.
    func testHostileTemplatesHitLimits() throws {
        let hostile = [
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{{ 'x' * 1000000000000 }}",
            "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
            String(repeating: "{% if true %}", count: 500) + String(repeating: "{% endif %}", count: 500),
            "{{ " + String(repeating: "(", count: 10_000) + "1" + String(repeating: ")", count: 10_000) + " }}",
        ]
        for source in hostile {
            let start = Date()
            XCTAssertThrowsError(try ChatTemplate(source).render(messages: [], addGenerationPrompt: true), source.prefix(60).description)
            XCTAssertLessThan(Date().timeIntervalSince(start), 1.0, source.prefix(60).description)
        }
    }
}
