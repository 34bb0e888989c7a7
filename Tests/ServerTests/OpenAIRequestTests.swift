import Engine
import Foundation
import GGUF
@testable import Server
import TestSupport
import Tokenizer
import XCTest

final class OpenAIRequestTests: XCTestCase {
    func parse(_ json: String, _ kind: OpenAIRequest.Kind = .completion) throws -> OpenAIRequest {
        try OpenAIRequest(json: JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any], kind: kind)
    }

    func assertRejects(_ json: String, _ kind: OpenAIRequest.Kind = .completion, param: String?, message: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try parse(json, kind), file: file, line: line) { error in
            XCTAssertEqual(error as? RequestFieldError, RequestFieldError(param: param, message), file: file, line: line)
        }
    }

    func testFieldsMapToTheEngineRequestWithOpenAIDefaults() throws {
        let r = try parse(#"""
            {"model": "m", "prompt": "hi", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 20, "min_p": 0.1,
             "presence_penalty": 0.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1, "seed": 42, "stop": "\n",
             "n": 3, "logprobs": 2, "ignore_eos": true, "user": "u", "stream": true, "stream_options": {"include_usage": true},
             "an_unknown_field": [1, 2]}
            """#)
        XCTAssertEqual(r.model, "m")
        XCTAssertEqual(r.prompts, [.text("hi")])
        XCTAssertEqual(r.maxTokens, 7)
        let s = r.parameters.sampling
        XCTAssertEqual([s.temperature, s.topP, s.minP, s.presencePenalty, s.frequencyPenalty, s.repetitionPenalty], [0.5, 0.9, 0.1, 0.5, -0.5, 1.1])
        XCTAssertEqual(s.topK, 20)
        XCTAssertEqual(s.seed, 42)
        XCTAssertEqual(r.parameters.stopStrings, ["\n"])
        XCTAssertTrue(r.parameters.ignoreEndOfGeneration)
        XCTAssertEqual(r.samples, 3)
        XCTAssertEqual(r.logprobs, 2)
        XCTAssertEqual(r.user, "u")
        XCTAssertTrue(r.stream)
        XCTAssertTrue(r.includeUsage)

        let defaults = try parse(#"{"prompt": [1, 2, 3]}"#)
        XCTAssertEqual(defaults.prompts, [.tokens([1, 2, 3])])
        XCTAssertNil(defaults.maxTokens)
        XCTAssertEqual(defaults.parameters.sampling.temperature, 1)
        XCTAssertEqual(defaults.parameters.sampling.topP, 1)
        XCTAssertEqual(defaults.parameters.sampling.topK, 0)
        XCTAssertEqual(defaults.parameters.sampling.minP, 0)
        XCTAssertNil(defaults.parameters.sampling.seed)
        XCTAssertFalse(defaults.stream)

        XCTAssertEqual(try parse(#"{"prompt": "x", "logit_bias": {"30": 100, "7042": -100}}"#).parameters.sampling.logitBias, [30: 100, 7042: -100])
        XCTAssertEqual(try parse(#"{"prompt": ["a", [5, 6]]}"#).prompts, [.text("a"), .tokens([5, 6])])
        XCTAssertEqual(try parse(#"{"prompt": "x", "top_k": -1}"#).parameters.sampling.topK, 0, "-1 is off, as in vLLM")
        XCTAssertEqual(try parse(#"{"prompt": "x", "max_completion_tokens": 9, "max_tokens": 3}"#).maxTokens, 9)

        let chat = try parse(#"""
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]}],
             "logprobs": true, "top_logprobs": 4}
            """#, .chat)
        XCTAssertEqual(chat.prompts, [.messages([.init(role: "system", content: "Be brief."), .init(role: "user", content: "Hi!")])])
        XCTAssertEqual(chat.logprobs, 4)
        XCTAssertNil(try parse(#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}"#, .chat).logprobs, "top_logprobs alone asks for nothing")
    }

    func testEveryOutOfRangeOrMistypedFieldIsNamed() {
        assertRejects(#"{"prompt": "x", "temperature": 2.5}"#, param: "temperature", message: "temperature must be between 0 and 2, got 2.5")
        assertRejects(#"{"prompt": "x", "temperature": "hot"}"#, param: "temperature", message: "temperature must be a number")
        assertRejects(#"{"prompt": "x", "temperature": true}"#, param: "temperature", message: "temperature must be a number")
        assertRejects(#"{"prompt": "x", "top_p": 0}"#, param: "top_p", message: "top_p must be in (0, 1], got 0.0")
        assertRejects(#"{"prompt": "x", "top_p": 1.5}"#, param: "top_p", message: "top_p must be in (0, 1], got 1.5")
        assertRejects(#"{"prompt": "x", "top_k": -2}"#, param: "top_k", message: "top_k must be -1 or 0 (off) or positive, got -2")
        assertRejects(#"{"prompt": "x", "top_k": 1.5}"#, param: "top_k", message: "top_k must be an integer")
        assertRejects(#"{"prompt": "x", "max_tokens": 0}"#, param: "max_tokens", message: "max_tokens must be at least 1, got 0 (0 is allowed with echo or prompt_logprobs)")
        assertRejects(#"{"prompt": "x", "max_completion_tokens": -3}"#, param: "max_completion_tokens", message: "max_completion_tokens must be at least 1, got -3")
        assertRejects(#"{"prompt": "x", "presence_penalty": 2.5}"#, param: "presence_penalty", message: "presence_penalty must be between -2 and 2, got 2.5")
        assertRejects(#"{"prompt": "x", "frequency_penalty": -3}"#, param: "frequency_penalty", message: "frequency_penalty must be between -2 and 2, got -3.0")
        assertRejects(#"{"prompt": "x", "n": 17}"#, param: "n", message: "n must be between 1 and 16, got 17")
        assertRejects(#"{"prompt": "x", "n": 0}"#, param: "n", message: "n must be between 1 and 16, got 0")
        assertRejects(#"{"prompt": "x", "logprobs": 21}"#, param: "logprobs", message: "logprobs must be between 0 and 20, got 21")
        assertRejects(#"{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}"#, .chat,
                      param: "top_logprobs", message: "top_logprobs must be between 0 and 20, got 21")
        assertRejects(#"{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}"#, param: "stop", message: "at most 4 stop strings, got 5")
        assertRejects(#"{"prompt": "x", "stop": "\#(String(repeating: "s", count: 1001))"}"#, param: "stop", message: "stop strings must be at most 1000 bytes")
        assertRejects(#"{"prompt": "x", "stop": [1]}"#, param: "stop", message: "stop must be a string or an array of strings")
        assertRejects(#"{"prompt": "x", "ignore_eos": 1}"#, param: "ignore_eos", message: "ignore_eos must be a boolean")
        assertRejects(#"{"prompt": "x", "stream": "yes"}"#, param: "stream", message: "stream must be a boolean")
        assertRejects(#"{"prompt": "x", "model": 3}"#, param: "model", message: "model must be a string")
        assertRejects(#"{"prompt": "x", "logit_bias": {"30": 101}}"#, param: "logit_bias", message: "logit_bias values must be numbers between -100 and 100")
        assertRejects(#"{"prompt": "x", "logit_bias": {"dot": 1}}"#, param: "logit_bias", message: "logit_bias keys must be token ids, got dot")
        assertRejects(#"{"prompt": "x", "logit_bias": [1]}"#, param: "logit_bias", message: "logit_bias must map token ids to numbers")
        assertRejects(#"{"max_tokens": 3}"#, param: "prompt", message: "the request needs a prompt")
        assertRejects(#"{"prompt": []}"#, param: "prompt", message: "prompt must be a string, an array of strings, or token ids")
        assertRejects(#"{"prompt": {"a": 1}}"#, param: "prompt", message: "prompt must be a string, an array of strings, or token ids")
        assertRejects(#"{"messages": []}"#, .chat, param: "messages", message: "messages must be a non-empty array of {role, content} objects")
        assertRejects(#"{"messages": [{"content": "x"}]}"#, .chat, param: "messages[0].role", message: "messages[0].role must be a string")
        assertRejects(#"{"messages": [{"role": "user", "content": 5}]}"#, .chat, param: "messages[0].content",
                      message: "messages[0].content must be a string or an array of text parts")
    }

    /// Every API's way of constraining output maps to one engine constraint, the schema in
    /// the order the client wrote it; a malformed field or two at once are named.
    func testOutputConstraintsFromEveryAPI() throws {
        func constraint(_ body: String) throws -> OutputConstraint? {
            let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as! [String: Any]
            return try OpenAIRequest(json: json, kind: .chat, ordered: try TemplateValue(parsingJSON: body)).parameters.constraint
        }
        let m = #""messages": [{"role": "user", "content": "x"}]"#
        XCTAssertNil(try constraint(#"{\#(m)}"#))
        XCTAssertNil(try constraint(#"{\#(m), "response_format": {"type": "text"}}"#))
        XCTAssertEqual(try constraint(#"{\#(m), "response_format": {"type": "json_object"}}"#), .jsonObject)
        XCTAssertEqual(try constraint(#"{\#(m), "response_format": {"type": "json_schema", "json_schema": {"name": "p", "strict": true, "schema": {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "integer"}}}}}}"#),
                       .jsonSchema(#"{"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "integer"}}}"#), "properties keep their order")
        XCTAssertEqual(try constraint(#"{\#(m), "json_schema": {"type": "boolean"}}"#), .jsonSchema(#"{"type": "boolean"}"#))
        XCTAssertEqual(try constraint(#"{\#(m), "guided_json": "{\"type\": \"null\"}"}"#), .jsonSchema(#"{"type": "null"}"#))
        XCTAssertEqual(try constraint(#"{\#(m), "grammar": "root ::= \"a\""}"#), .grammar(#"root ::= "a""#))
        XCTAssertEqual(try constraint(#"{\#(m), "guided_regex": "[0-9]+"}"#), .regex("[0-9]+"))
        XCTAssertEqual(try constraint(#"{\#(m), "guided_choice": ["yes", "no"]}"#), .choice(["yes", "no"]))
        assertRejects(#"{\#(m), "response_format": {"type": "xml"}}"#, .chat, param: "response_format.type", message: "response_format.type must be text, json_object or json_schema, got xml")
        assertRejects(#"{\#(m), "response_format": "json"}"#, .chat, param: "response_format", message: "response_format must be an object with a `type` of text, json_object or json_schema")
        assertRejects(#"{\#(m), "response_format": {"type": "json_schema"}}"#, .chat, param: "response_format.json_schema",
                      message: "response_format of type json_schema needs `json_schema`, an object with `name` and `schema`")
        assertRejects(#"{\#(m), "grammar": 3}"#, .chat, param: "grammar", message: "grammar must be a string of GBNF rules")
        assertRejects(#"{\#(m), "guided_choice": []}"#, .chat, param: "guided_choice", message: "guided_choice must be a non-empty array of strings")
        assertRejects(#"{\#(m), "guided_grammar": "start: x"}"#, .chat, param: "guided_grammar", message: "guided_grammar (vLLM's Lark/EBNF) is not supported; send GBNF rules as `grammar`")
        assertRejects(#"{\#(m), "grammar": "root ::= \"a\"", "guided_regex": "a"}"#, .chat, param: "guided_regex", message: "only one output constraint may be given, got grammar and guided_regex")
    }

    func testPromptsAreTokenizedAndCheckedAgainstTheContext() throws {
        let file = try TestSupport.model()
        let tokenizer = try Tokenizer(file: file)
        let template = try XCTUnwrap(try ChatTemplate(metadata: file.metadata))
        func requests(_ json: String, _ kind: OpenAIRequest.Kind = .completion, context: Int = 64) throws -> [GenerationRequest] {
            try parse(json, kind).generationRequests(tokenizer: tokenizer, chatTemplate: { template }, contextLength: context)
        }
        let plain = try requests(#"{"prompt": "The capital of France is", "max_tokens": 4}"#)
        XCTAssertEqual(plain.map(\.prompt), [[504, 3575, 282, 4649, 314]])
        XCTAssertEqual(plain[0].parameters.maxTokens, 4)
        XCTAssertEqual(try requests(#"{"prompt": "The capital of France is"}"#)[0].parameters.maxTokens, 59, "without max_tokens: what the context leaves")
        let special = try requests(#"{"prompt": "<|im_start|>user"}"#)
        XCTAssertEqual(special[0].prompt.first, 1, "special tokens in a text prompt are parsed, as llama-server does")

        let chat = try requests(#"{"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 2}"#, .chat, context: 256)
        let rendered = try template.render([(role: "user", content: "Say hello.")], tokenizer: tokenizer)
        XCTAssertEqual(chat[0].prompt, tokenizer.encode(rendered, parseSpecial: true, addSpecial: false))

        XCTAssertThrowsError(try requests(#"{"prompt": "The capital of France is", "max_tokens": 60}"#)) {
            XCTAssertEqual($0 as? RequestFieldError, RequestFieldError(
                param: "prompt",
                "This model's maximum context length is 64 tokens. However, you requested 65 tokens (5 in the prompt, 60 in the completion). Please reduce the length of the prompt or completion.",
                code: "context_length_exceeded"))
        }
        // Past context x longest token bytes, refused before tokenizing, by its size.
        let longest = tokenizer.vocabulary.longestTokenBytes
        let huge = String(repeating: "a", count: 64 * longest)
        XCTAssertThrowsError(try requests(#"{"prompt": "\#(huge)"}"#)) {
            XCTAssertEqual($0 as? RequestFieldError, RequestFieldError(
                param: "prompt",
                "This model's maximum context length is 64 tokens. However, the prompt takes \(64 * longest) bytes, which is at least 64 tokens. Please reduce the length of the prompt.",
                code: "context_length_exceeded"))
        }
        XCTAssertThrowsError(try requests(#"{"prompt": "\#(String(repeating: "a", count: 63 * longest))", "max_tokens": 1}"#)) {
            XCTAssertTrue(($0 as? RequestFieldError)?.message.contains("However, you requested") == true, "under the bound, the prompt is tokenized: \($0)")
        }
        XCTAssertThrowsError(try requests(#"{"prompt": ""}"#)) { XCTAssertEqual($0 as? RequestFieldError, RequestFieldError(param: "prompt", "the prompt is empty")) }
        XCTAssertThrowsError(try requests(#"{"prompt": [49152]}"#)) {
            XCTAssertEqual($0 as? RequestFieldError, RequestFieldError(param: "prompt", "token id 49152 is outside the vocabulary of 49152 tokens"))
        }
    }

    func testChatTemplateArgumentsReachTheTemplate() throws {
        let tokenizer = try Tokenizer(file: try TestSupport.model())
        // Qwen3's switch, reduced: thinking unless the request turns it off.
        let template = try ChatTemplate("""
            {%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor -%}
            <|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{{ style | default("") }}
            """)
        func rendered(_ json: String) throws -> String {
            let r = try parse(json, .chat).generationRequests(tokenizer: tokenizer, chatTemplate: { template }, contextLength: 256)
            return tokenizer.decode(r[0].prompt, renderSpecial: true)
        }
        let messages = #""messages": [{"role": "user", "content": "Hi"}]"#
        XCTAssertEqual(try rendered("{\(messages)}"), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(try rendered(#"{\#(messages), "chat_template_kwargs": {"enable_thinking": false, "style": "terse"}}"#),
                       "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nterse")
        assertRejects(#"{\#(messages), "chat_template_kwargs": [1]}"#, .chat, param: "chat_template_kwargs",
                      message: "chat_template_kwargs must be an object of template variables")
        assertRejects(#"{\#(messages), "chat_template_kwargs": {"messages": []}}"#, .chat, param: "chat_template_kwargs",
                      message: "chat_template_kwargs cannot set `messages`; it comes from the request's own fields")
    }

    func responses(_ json: String) throws -> ResponsesRequest {
        try ResponsesRequest(json: JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any], ordered: TemplateValue(parsingJSON: json))
    }

    func testAResponsesRequestIsTheChatCompletionItAmountsTo() throws {
        let r = try responses("""
            {"model": "m", "instructions": "Be terse.", "max_output_tokens": 50, "temperature": 0, "stream": true, "store": true,
             "reasoning": {"effort": "low"}, "include": ["reasoning.encrypted_content"],
             "input": [{"role": "user", "content": [{"type": "input_text", "text": "Weather "}, {"type": "input_text", "text": "in Paris?"}]},
                       {"type": "reasoning", "id": "rs_1", "summary": []},
                       {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"},
                       {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
                       {"type": "function_call_output", "call_id": "call_1", "output": "18"},
                       {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "18 degrees."}]}],
             "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"z": {}, "a": {}}}, "strict": true}],
             "tool_choice": {"type": "function", "name": "get_weather"},
             "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}}}
            """)
        XCTAssertTrue(r.stream)
        XCTAssertEqual(r.chat.json(indent: nil), #"{"model": "m", "temperature": 0, "stream": true, "messages": [{"role": "system", "content": "Be terse."}, "#
            + #"{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": null, "tool_calls": ["#
            + #"{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}, "#
            + #"{"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}, "#
            + #"{"role": "tool", "content": "18", "tool_call_id": "call_1"}, {"role": "assistant", "content": "18 degrees."}], "#
            + #""max_completion_tokens": 50, "tools": [{"type": "function", "function": {"name": "get_weather", "#
            + #""parameters": {"type": "object", "properties": {"z": {}, "a": {}}}, "strict": true}}], "#
            + #""tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "#
            + #""response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}}}"#)
        XCTAssertEqual(try responses(#"{"input": "Hi", "text": {"format": {"type": "text"}}}"#).chat.json(indent: nil),
                       #"{"messages": [{"role": "user", "content": "Hi"}]}"#)

        func rejects(_ json: String, param: String, message: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try responses(json), file: file, line: line) { error in
                XCTAssertEqual(error as? RequestFieldError, RequestFieldError(param: param, message), file: file, line: line)
            }
        }
        rejects(#"{"input": "Hi", "previous_response_id": "resp_1"}"#, param: "previous_response_id",
                message: "previous_response_id is not supported: this server stores no responses; send the whole conversation in `input`")
        rejects(#"{"input": "Hi", "background": true}"#, param: "background", message: "background responses are not supported: this server stores no responses")
        rejects(#"{"instructions": "Hi"}"#, param: "input", message: "input must be a string or a non-empty array of input items")
        rejects(#"{"input": [{"type": "item_reference", "id": "msg_1"}]}"#, param: "input[0]",
                message: "input[0] is an item reference, which needs stored responses; this server stores none")
        rejects(#"{"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}"#, param: "input[0].content[0]",
                message: "input[0].content[0]: only text parts are supported, not input_image")
        rejects(#"{"input": "Hi", "tools": [{"type": "web_search"}]}"#, param: "tools[0]", message: "tools[0]: only function tools are supported, not web_search")
        rejects(#"{"input": "Hi", "include": ["message.output_text.logprobs"]}"#, param: "include",
                message: "message.output_text.logprobs is not supported on /v1/responses; use /v1/chat/completions with logprobs")
        // The chat parser's errors, named as this API spells the fields: message k is
        // where it came from (the calls of two items are one message).
        XCTAssertEqual(r.messageSources, ["instructions", "input[0]", "input[2]", "input[4]", "input[5]"])
        XCTAssertEqual(r.renamed(RequestFieldError(param: "messages[3].role", "messages[3].role must be a string")),
                       RequestFieldError(param: "input[4].role", "input[4].role must be a string"))
        XCTAssertEqual(r.renamed(RequestFieldError(param: "tools[0].function.parameters", "m")), RequestFieldError(param: "tools[0].parameters", "m"))
        XCTAssertEqual(r.renamed(RequestFieldError(param: "max_completion_tokens", "max_completion_tokens must be at least 1")),
                       RequestFieldError(param: "max_output_tokens", "max_output_tokens must be at least 1"))
    }

    func testErrorsAndResponsesEncodeExactly() throws {
        let error = APIError.from(RequestFieldError(param: "top_p", "top_p must be in (0, 1], got 0.0"))!
        XCTAssertEqual(error.status.code, 400)
        XCTAssertEqual(String(decoding: error.body, as: UTF8.self),
                       #"{"error":{"code":null,"message":"top_p must be in (0, 1], got 0.0","param":"top_p","type":"invalid_request_error"}}"#)
        XCTAssertEqual(APIError.from(EngineError.shutDown)?.status.code, 503)
        XCTAssertNil(APIError.from(CocoaError(.fileNoSuchFile)), "unknown failures are not passed through as client errors")

        let envelope = OpenAIResponse.Envelope(
            id: "cmpl-1", object: "text_completion", created: 7, model: "m", system_fingerprint: "apus-1",
            choices: [OpenAIResponse.CompletionChoice(index: 0, text: " Paris", logprobs: nil, finish_reason: "length")],
            usage: .init(prompt: 5, completion: 2, cached: 0))
        XCTAssertEqual(String(decoding: OpenAIResponse.encode(envelope), as: UTF8.self),
                       #"{"choices":[{"finish_reason":"length","index":0,"text":" Paris"}],"created":7,"id":"cmpl-1","model":"m","object":"text_completion","#
                       + #""system_fingerprint":"apus-1","usage":{"completion_tokens":2,"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":0},"total_tokens":7}}"#)
        let chunk = OpenAIResponse.Envelope(
            id: "chatcmpl-1", object: "chat.completion.chunk", created: 7, model: "m", system_fingerprint: "apus-1",
            choices: [OpenAIResponse.ChatChunkChoice(index: 1, delta: .init(content: "!"), logprobs: nil, finish_reason: "stop")], usage: nil)
        XCTAssertEqual(String(decoding: OpenAIResponse.encode(chunk), as: UTF8.self),
                       #"{"choices":[{"delta":{"content":"!"},"finish_reason":"stop","index":1}],"created":7,"id":"chatcmpl-1","model":"m","#
                       + #""object":"chat.completion.chunk","system_fingerprint":"apus-1"}"#)
    }
}
