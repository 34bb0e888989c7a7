import Engine
import Foundation
@testable import Server
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
}
