import Engine
import GGUF
import Foundation
@testable import Server
import TestSupport
import Tokenizer
import XCTest

final class ToolCallTests: XCTestCase {
    let tools: Set<String> = ["get_weather", "get_time"]

    func testCallsAreReadFromEveryWayTheModelWritesThem() {
        let f = ToolCallFormat.hermes
        var r = f.parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", tools: tools)
        XCTAssertNil(r.content)
        XCTAssertEqual(r.calls.map(\.name), ["get_weather"])
        XCTAssertEqual(r.calls.first?.arguments, #"{"city": "Paris"}"#)
        r = f.parse("\n```json\n{\"name\": \"get_time\", \"arguments\": \"{\\\"timezone\\\": \\\"UTC\\\"}\"}\n```", tools: tools)
        XCTAssertNil(r.content)
        XCTAssertEqual(r.calls.map(\.arguments), [#"{"timezone": "UTC"}"#], "arguments given as a string stay that string")
        let example = "Here is an example:\n```json\n{\"name\": \"get_time\", \"arguments\": {}}\n```"
        r = f.parse(example, tools: tools)
        XCTAssertEqual(r.calls, [], "a fence after text is an example, not a call")
        XCTAssertEqual(r.content, example)
        r = f.parse(#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"# + "\n" + #"{"name": "get_time", "arguments": {}}"#, tools: tools)
        XCTAssertEqual(r.calls.map(\.name), ["get_weather", "get_time"], "bare calls, one per line")
        r = f.parse("```json\n{\"name\": \"Alice\", \"age\": 3}\n```", tools: tools)
        XCTAssertEqual(r.calls, [], "a JSON block naming no tool is content")
        XCTAssertEqual(r.content, "```json\n{\"name\": \"Alice\", \"age\": 3}\n```")
        r = f.parse("<tool_call>\n{\"name\": \"get_weather\", \"argu", tools: tools)
        XCTAssertEqual(r.calls, [], "a call cut short is content")
    }

    func testStreamingHoldsBackOnlyWhatMayBeACall() {
        var s = ToolCallSplitter(format: .hermes, tools: tools)
        XCTAssertEqual(s.feed("It is "), [.content("It is ")])
        XCTAssertEqual(s.feed("sunny <tool"), [.content("sunny ")], "a possible opener is held")
        XCTAssertEqual(s.feed("_call>{\"name\": \"get_weather\", "), [])
        let pieces = s.feed("\"arguments\": {}}</tool_call> done")
        guard case .call(let c) = pieces.first else { return XCTFail("a call, got \(pieces)") }
        XCTAssertEqual(c.name, "get_weather")
        XCTAssertEqual(pieces.dropFirst().first, .content(" done"))
        XCTAssertEqual(s.finish(), [])
        var held = ToolCallSplitter(format: .hermes, tools: tools)
        XCTAssertEqual(held.feed(" {\"name\": \"get_time\""), [], "output opening with a brace is held whole")
        XCTAssertEqual(held.feed(", \"arguments\": {\"timezone\": \"UTC\"}}").count, 0)
        guard case .call(let t)? = held.finish().first else { return XCTFail("a bare call") }
        XCTAssertEqual(t.arguments, #"{"timezone": "UTC"}"#)
    }

    // MARK: Llama 3 and Mistral

    /// The two tools the grammars are built for (`tools` names them).
    let definitions = [
        ToolDefinition(name: "get_weather", parameters: #"{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}"#, templateValue: .none),
        ToolDefinition(name: "get_time", parameters: #"{"type": "object", "properties": {}}"#, templateValue: .none),
    ]

    /// SmolLM2's vocabulary (any will do: acceptance is over bytes).
    private static let trie = TokenTrie(tokenizer: try! Tokenizer(file: TestSupport.model(.smolLM2)))

    /// Whether `constraint`'s grammar accepts `text` whole.
    private func accepts(_ constraint: OutputConstraint?, _ text: String) throws -> Bool {
        let a = try GrammarAutomaton(grammar: Grammar(gbnf: try XCTUnwrap(constraint).gbnf()), trie: Self.trie)
        return a.isAccepting(a.next(a.initial, bytes: Array(text.utf8)))
    }

    /// Chat templates as the models' GGUF files carry them (Meta's Llama 3.2 Instruct,
    /// Mistral's Nemo Instruct 2407).
    private func template(_ name: String) throws -> ChatTemplate {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Templates/\(name).jinja")
        return try ChatTemplate(String(contentsOf: url, encoding: .utf8))
    }

    func testTheFormatIsChosenFromTheTemplate() throws {
        XCTAssertEqual(ToolCallFormat(template: try template("llama-3.2-instruct")), .llama3)
        XCTAssertEqual(ToolCallFormat(template: try template("mistral-nemo-instruct-2407")), .mistral)
        XCTAssertEqual(ToolCallFormat(template: try ChatTemplate("{% for m in messages %}<tool_call>{% endfor %}")), .hermes)
        XCTAssertEqual(ToolCallFormat(template: try template("mistral-small-3.2-instruct-2506")), .mistralArgs)
        XCTAssertEqual(ToolCallFormat(template: try ChatTemplate("[TOOL_CALLS]{{ name }}[ARGS]{{ arguments }}")), .mistralArgs)
        XCTAssertNil(ToolCallFormat(template: try ChatTemplate("{{ messages[0].content }}")))
    }

    func testLlama3CallsAreReadBareOrAfterThePythonTag() {
        let f = ToolCallFormat.llama3
        var r = f.parse(#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#, tools: tools)
        XCTAssertNil(r.content)
        XCTAssertEqual(r.calls.map(\.name), ["get_weather"])
        XCTAssertEqual(r.calls.first?.arguments, #"{"city": "Paris"}"#)
        XCTAssertTrue(r.calls.first?.id.hasPrefix("call_") ?? false)
        r = f.parse(#"<|python_tag|>{"name": "get_time", "parameters": {}}; {"name": "get_weather", "parameters": {"city": "Oslo"}}"#, tools: tools)
        XCTAssertEqual(r.calls.map(\.name), ["get_time", "get_weather"], "calls separated by ;")
        r = f.parse("Let me check. <|python_tag|>{\"name\": \"get_time\", \"parameters\": {\"timezone\": \"UTC\"}}", tools: tools)
        XCTAssertEqual(r.content, "Let me check.")
        XCTAssertEqual(r.calls.map(\.arguments), [#"{"timezone": "UTC"}"#])
        r = f.parse("<|python_tag|>print(1 + 1)", tools: tools)
        XCTAssertEqual(r.calls, [], "code for the built-in interpreter is not a call of a client's tool")
        XCTAssertEqual(r.content, "<|python_tag|>print(1 + 1)")
        r = f.parse(#"{"name": "Alice", "parameters": {}}"#, tools: tools)
        XCTAssertEqual(r.calls, [], "JSON naming no tool is content")
    }

    func testMistralCallsAreAListAfterTheMarkerWithTheirOwnIDs() {
        let f = ToolCallFormat.mistral
        var r = f.parse(#"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1B2c3D4e"}, {"name": "get_time", "arguments": {}}]"#, tools: tools)
        XCTAssertNil(r.content)
        XCTAssertEqual(r.calls.map(\.name), ["get_weather", "get_time"])
        XCTAssertEqual(r.calls.map(\.arguments), [#"{"city": "Paris"}"#, "{}"])
        XCTAssertEqual(r.calls[0].id, "a1B2c3D4e", "the model's own id is kept")
        XCTAssertTrue(ToolCallFormat.isMistralID(r.calls[1].id), "a new id is nine letters and digits, as Mistral's templates require: \(r.calls[1].id)")
        r = f.parse(#"[TOOL_CALLS][{"name": "get_time", "arguments": {}, "id": "call_1"}]"#, tools: tools)
        XCTAssertTrue(ToolCallFormat.isMistralID(r.calls[0].id), "an id the template would refuse is replaced")
        r = f.parse(#"{"name": "get_time", "arguments": {}}"#, tools: tools)
        XCTAssertEqual(r.calls, [], "Mistral marks its calls; bare JSON is an answer")
        r = f.parse(#"[TOOL_CALLS][{"name": "get_time", "argu"#, tools: tools)
        XCTAssertEqual(r.calls, [], "a call cut short is content")
        XCTAssertEqual(r.content, #"[TOOL_CALLS][{"name": "get_time", "argu"#)

        var s = ToolCallSplitter(format: .mistral, tools: tools)
        XCTAssertEqual(s.feed("Sure. [TOOL"), [.content("Sure. ")], "a possible marker is held")
        XCTAssertEqual(s.feed(#"_CALLS][{"name": "get_time", "arguments": {}}]"#), [], "the list runs to the end of the output")
        guard case .call(let c)? = s.finish().first else { return XCTFail("a call at the end") }
        XCTAssertEqual(c.name, "get_time")
    }

    /// What the grammar of each format makes the model write is what its parser reads, and
    /// what the parser returns goes back through the model's own template as it was trained.
    func testEachFormatsGrammarWritesWhatItsParserReadsAndItsTemplateRendersBack() throws {
        let llama = try ToolCallFormat.llama3.constraint(tools: definitions, choice: .required, parallel: true)
        XCTAssertTrue(try accepts(llama, #"{"name": "get_weather", "parameters": {"city": "Paris"}}"#))
        XCTAssertTrue(try accepts(llama, #"<|python_tag|>{"name": "get_time", "parameters": {}}"#))
        XCTAssertFalse(try accepts(llama, #"{"name": "get_weather", "arguments": {"city": "Paris"}}"#))
        XCTAssertFalse(try accepts(llama, #"{"name": "get_weather", "parameters": {}}"#), "a required argument missing")
        let mistral = try ToolCallFormat.mistral.constraint(tools: definitions, choice: .required, parallel: true)
        XCTAssertTrue(try accepts(mistral, #"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1B2c3D4e"}, {"name": "get_time", "arguments": {}}]"#))
        XCTAssertFalse(try accepts(mistral, #"[TOOL_CALLS][{"name": "get_time", "arguments": {}, "id": "call_1"}]"#), "ids are nine letters and digits")
        XCTAssertFalse(try accepts(mistral, #"{"name": "get_time", "arguments": {}}"#))
        let single = try ToolCallFormat.mistral.constraint(tools: definitions, choice: .function("get_time"), parallel: false)
        XCTAssertTrue(try accepts(single, #"[TOOL_CALLS][{"name": "get_time", "arguments": {}}]"#))
        XCTAssertFalse(try accepts(single, #"[TOOL_CALLS][{"name": "get_time", "arguments": {}}, {"name": "get_time", "arguments": {}}]"#))
        XCTAssertFalse(try accepts(single, #"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}]"#))
        guard case .triggered(let anywhere, let atStart, _)? = try ToolCallFormat.mistral.constraint(tools: definitions, choice: .auto, parallel: true) else {
            return XCTFail("auto is a triggered grammar")
        }
        XCTAssertEqual(anywhere, ["[TOOL_CALLS]"])
        XCTAssertEqual(atStart, [])

        let question = ChatMessage(role: "user", content: "Weather in Paris?")
        let tool = TemplateValue.dict([("type", .string("function")), ("function", .dict([
            ("name", .string("get_weather")), ("description", .string("The weather in a city")),
            ("parameters", try TemplateValue(parsingJSON: definitions[0].parameters)),
        ]))])
        func history(_ format: ToolCallFormat, _ output: String) throws -> [ChatMessage] {
            let calls = format.parse(output, tools: tools).calls
            XCTAssertEqual(calls.count, 1)
            return [question, ChatMessage(role: "assistant", content: nil, toolCalls: calls.map { ChatMessage.ToolCall(id: $0.id, name: $0.name, arguments: $0.arguments) }),
                    ChatMessage(role: "tool", content: "18 degrees, sunny", toolCallID: calls[0].id)]
        }
        func render(_ t: ChatTemplate, _ messages: [ChatMessage]) throws -> String {
            try t.render(messages: messages.map { $0.templateValue(objectArguments: t.takesObjectArguments) }, tools: [tool],
                         extra: ["bos_token": .string("<s>"), "eos_token": .string("</s>"), "date_string": .string("06 Dec 2026")])
        }
        let llamaTemplate = try template("llama-3.2-instruct")
        XCTAssertTrue(llamaTemplate.takesObjectArguments)
        let l = try render(llamaTemplate, try history(.llama3, #"{"name": "get_weather", "parameters": {"city": "Paris"}}"#))
        // A string is iterable to Jinja, so Meta's template prints a tool's text answer as JSON.
        XCTAssertTrue(l.hasSuffix("""
            <|start_header_id|>assistant<|end_header_id|>

            {"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>

            "18 degrees, sunny"<|eot_id|><|start_header_id|>assistant<|end_header_id|>


            """), l)
        let mistralTemplate = try template("mistral-nemo-instruct-2407")
        XCTAssertTrue(mistralTemplate.takesObjectArguments)
        let m = try render(mistralTemplate, try history(.mistral, #"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]"#))
        let id = try XCTUnwrap(m.firstMatch(of: /"id": "([A-Za-z0-9]{9})"/)?.1)
        XCTAssertEqual(m, """
            <s>[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", \
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}][/AVAILABLE_TOOLS]\
            [INST]Weather in Paris?[/INST][TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "\(id)"}]</s>\
            [TOOL_RESULTS]{"content": 18 degrees, sunny, "call_id": "\(id)"}[/TOOL_RESULTS]
            """)
    }

    /// Mistral's later format: a marker per call, the name, perhaps the model's own id, and
    /// the arguments after `[ARGS]`; back through Mistral Small 3.2's own template.
    func testMistralNamedCallsAreReadWrittenAndRenderedBack() throws {
        let f = ToolCallFormat.mistralArgs
        var r = f.parse(#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[CALL_ID]a1B2c3D4e[ARGS]{}"#, tools: tools)
        XCTAssertNil(r.content)
        XCTAssertEqual(r.calls.map(\.name), ["get_weather", "get_time"])
        XCTAssertEqual(r.calls.map(\.arguments), [#"{"city": "Paris"}"#, "{}"])
        XCTAssertTrue(ToolCallFormat.isMistralID(r.calls[0].id))
        XCTAssertEqual(r.calls[1].id, "a1B2c3D4e", "the model's own id is kept")
        r = f.parse(#"Let me look. [TOOL_CALLS]get_time[ARGS]{"timezone": "UTC"}"#, tools: tools)
        XCTAssertEqual(r.content, "Let me look.")
        XCTAssertEqual(r.calls.map(\.arguments), [#"{"timezone": "UTC"}"#])
        r = f.parse(#"[TOOL_CALLS]get_time[ARGS]{"timezone": "#, tools: tools)
        XCTAssertEqual(r.calls, [], "a call cut short is content")
        r = f.parse(#"[TOOL_CALLS]delete_everything[ARGS]{}"#, tools: tools)
        XCTAssertEqual(r.calls, [], "only the client's tools")
        XCTAssertEqual(Set(f.markers), ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"])

        let parallel = try f.constraint(tools: definitions, choice: .required, parallel: true)
        XCTAssertTrue(try accepts(parallel, #"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[CALL_ID]a1B2c3D4e[ARGS]{}"#))
        XCTAssertFalse(try accepts(parallel, #"[TOOL_CALLS]get_weather[ARGS]{}"#), "a required argument missing")
        XCTAssertFalse(try accepts(parallel, #"[TOOL_CALLS]get_time[CALL_ID]call_1[ARGS]{}"#), "ids are nine letters and digits")
        let single = try f.constraint(tools: definitions, choice: .function("get_time"), parallel: false)
        XCTAssertTrue(try accepts(single, #"[TOOL_CALLS]get_time[ARGS]{}"#))
        XCTAssertFalse(try accepts(single, #"[TOOL_CALLS]get_time[ARGS]{}[TOOL_CALLS]get_time[ARGS]{}"#))
        XCTAssertFalse(try accepts(single, #"[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}"#))

        let t = try template("mistral-small-3.2-instruct-2506")
        XCTAssertTrue(t.takesObjectArguments)
        let calls = f.parse(#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}"#, tools: tools).calls
        let messages = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Weather in Paris?"),
                        ChatMessage(role: "assistant", content: nil, toolCalls: calls.map { ChatMessage.ToolCall(id: $0.id, name: $0.name, arguments: $0.arguments) }),
                        ChatMessage(role: "tool", content: "18 degrees, sunny", toolCallID: calls[0].id)]
        let out = try t.render(messages: messages.map { $0.templateValue(objectArguments: true) }, tools: nil,
                               extra: ["bos_token": .string("<s>"), "eos_token": .string("</s>")])
        XCTAssertEqual(out, """
            <s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]Weather in Paris?[/INST][TOOL_CALLS]get_weather[CALL_ID]\(calls[0].id)\
            [ARGS]{"city": "Paris"}</s>[TOOL_RESULTS]\(calls[0].id)[TOOL_CONTENT]18 degrees, sunny[/TOOL_RESULTS]
            """)
    }
}
