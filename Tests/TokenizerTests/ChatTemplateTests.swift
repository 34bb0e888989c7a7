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
        for model in [TestModel.smolLM2, .qwen05] {
            let file = try TestSupport.model(model)
            let template = try XCTUnwrap(try ChatTemplate(metadata: file.metadata))
            let tokenizer = try Tokenizer(file: file)
            let cases = try TestSupport.jsonLines("chat_template.jsonl", model: model)
            XCTAssertFalse(cases.isEmpty)
            for c in cases {
                let messages = (c["messages"] as! [[String: Any]]).map { (role: $0["role"] as! String, content: $0["content"] as! String) }
                let rendered = try template.render(messages, tokenizer: tokenizer, addGenerationPrompt: c["add_generation_prompt"] as? Bool ?? true)
                XCTAssertEqual(rendered, c["rendered"] as! String, model.fileName)
            }
        }
        XCTAssertNil(try ChatTemplate(metadata: TestSupport.model(.gemma3).metadata), "the Gemma 3 base model has no template")
    }

    /// The tool definitions of the tests below, as an OpenAI client sends them (key order kept).
    static let weatherTool = """
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", \
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city's name"}}, "required": ["city"]}}}
        """

    /// Qwen2.5's template with tools: the system turn lists them, the assistant's calls become
    /// <tool_call> blocks with the arguments as a JSON object, and consecutive tool results
    /// share one user turn of <tool_response> blocks. The expected text follows the template
    /// source (`tokenizer.chat_template`) line by line.
    func testQwenTemplateRendersToolsCallsAndResults() throws {
        let file = try TestSupport.model(.qwen05)
        let template = try XCTUnwrap(try ChatTemplate(metadata: file.metadata))
        let tokenizer = try Tokenizer(file: file)
        XCTAssertTrue(template.takesObjectArguments)
        let tools = [try TemplateValue(parsingJSON: Self.weatherTool)]
        let messages = [
            ChatMessage(role: "system", content: "You are a weather bot."),
            ChatMessage(role: "user", content: "Weather in Paris and Lyon?"),
            ChatMessage(role: "assistant", content: nil, toolCalls: [
                .init(id: "call_1", name: "get_weather", arguments: #"{"city": "Paris"}"#),
                .init(id: "call_2", name: "get_weather", arguments: #"{"city":"Lyon"}"#),
            ]),
            ChatMessage(role: "tool", content: #"{"temperature": 18}"#, name: "get_weather", toolCallID: "call_1"),
            ChatMessage(role: "tool", content: #"{"temperature": 21}"#, name: "get_weather", toolCallID: "call_2"),
            ChatMessage(role: "assistant", content: "Paris 18 °C, Lyon 21 °C."),
            ChatMessage(role: "user", content: "Thanks!"),
        ]
        let expected = """
            <|im_start|>system
            You are a weather bot.

            # Tools

            You may call one or more functions to assist with the user query.

            You are provided with function signatures within <tools></tools> XML tags:
            <tools>
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", \
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city's name"}}, "required": ["city"]}}}
            </tools>

            For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
            <tool_call>
            {"name": <function-name>, "arguments": <args-json-object>}
            </tool_call><|im_end|>
            <|im_start|>user
            Weather in Paris and Lyon?<|im_end|>
            <|im_start|>assistant
            <tool_call>
            {"name": "get_weather", "arguments": {"city": "Paris"}}
            </tool_call>
            <tool_call>
            {"name": "get_weather", "arguments": {"city": "Lyon"}}
            </tool_call><|im_end|>
            <|im_start|>user
            <tool_response>
            {"temperature": 18}
            </tool_response>
            <tool_response>
            {"temperature": 21}
            </tool_response><|im_end|>
            <|im_start|>assistant
            Paris 18 °C, Lyon 21 °C.<|im_end|>
            <|im_start|>user
            Thanks!<|im_end|>
            <|im_start|>assistant

            """
        XCTAssertEqual(try template.render(messages, tools: tools, tokenizer: tokenizer), expected)
    }

    /// Without a system message the tools turn opens with Qwen's default one; an assistant
    /// message with content and a call keeps both; a lone tool result closes its own turn.
    func testQwenToolsWithoutASystemMessage() throws {
        let file = try TestSupport.model(.qwen05)
        let template = try XCTUnwrap(try ChatTemplate(metadata: file.metadata))
        let tokenizer = try Tokenizer(file: file)
        let messages = [
            ChatMessage(role: "user", content: "Paris?"),
            ChatMessage(role: "assistant", content: "Let me look.", toolCalls: [.init(name: "get_weather", arguments: #"{"city": "Paris"}"#)]),
            ChatMessage(role: "tool", content: "sunny", toolCallID: "call_1"),
        ]
        let rendered = try template.render(messages, tools: [try TemplateValue(parsingJSON: Self.weatherTool)], tokenizer: tokenizer,
                                           addGenerationPrompt: false)
        XCTAssertTrue(rendered.hasPrefix("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"))
        XCTAssertTrue(rendered.hasSuffix("""
            </tool_call><|im_end|>
            <|im_start|>user
            Paris?<|im_end|>
            <|im_start|>assistant
            Let me look.
            <tool_call>
            {"name": "get_weather", "arguments": {"city": "Paris"}}
            </tool_call><|im_end|>
            <|im_start|>user
            <tool_response>
            sunny
            </tool_response><|im_end|>

            """), rendered)
        // Without tools, the ordinary system turn.
        let plain = try template.render([ChatMessage(role: "user", content: "hi")], tokenizer: tokenizer, addGenerationPrompt: false)
        XCTAssertEqual(plain, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n")
    }

    /// A template that prints arguments as text gets OpenAI's JSON text unchanged.
    func testArgumentsStayTextForTemplatesThatPrintThemAsText() throws {
        let template = try ChatTemplate("{% for m in messages %}{% for c in m.tool_calls %}{{ c.function.name }}({{ c.function.arguments }}){% endfor %}{% endfor %}")
        XCTAssertFalse(template.takesObjectArguments)
        let tokenizer = try Tokenizer(file: TestSupport.model(.qwen05))
        let call = ChatMessage(role: "assistant", content: nil, toolCalls: [.init(name: "f", arguments: #"{"x": 1}"#)])
        XCTAssertEqual(try template.render([call], tokenizer: tokenizer), #"f({"x": 1})"#)
        XCTAssertEqual(call.templateValue(objectArguments: true),
                       .dict([("role", .string("assistant")), ("content", .string("")),
                              ("tool_calls", .array([.dict([("type", .string("function")),
                                                            ("function", .dict([("name", .string("f")), ("arguments", .dict([("x", .int(1))]))]))])]))]))
    }

    func testJSONParsingKeepsKeyOrder() throws {
        let v = try TemplateValue(parsingJSON: #" {"z": [1, -2.5e1, true, null], "a": {"\u00e9\ud83d\ude00\n": "x\"y"}, "z": 3} "#)
        XCTAssertEqual(v, .dict([("z", .int(3)), ("a", .dict([("é😀\n", .string("x\"y"))]))]))
        XCTAssertEqual(try render("{{ v | tojson }}", ["v": v]), #"{"z": 3, "a": {"é😀\n": "x\"y"}}"#)
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"\u{01}\"", "1 2", String(repeating: "[", count: 200) + String(repeating: "]", count: 200)] {
            XCTAssertThrowsError(try TemplateValue(parsingJSON: bad), bad)
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
