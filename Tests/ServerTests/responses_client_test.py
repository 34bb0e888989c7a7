"""OpenAI's Responses API through the official `openai` client, openai-agents and langchain-openai,
against a live server on Qwen2.5-Coder-0.5B-Instruct (started by OpenAIClientTests.swift).

Usage: python3 responses_client_test.py --base-url http://127.0.0.1:PORT --api-key KEY --model NAME
Exits non-zero, naming the check, at the first failure.
"""
import argparse
import asyncio
import json
import sys
from typing import Literal

import openai
from pydantic import BaseModel

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", required=True)
parser.add_argument("--api-key", required=True)
parser.add_argument("--model", required=True)
args = parser.parse_args()

client = openai.OpenAI(base_url=args.base_url + "/v1", api_key=args.api_key, max_retries=0, timeout=300)
checks = 0


def check(condition, what):
    global checks
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def expect_error(param, what, **kw):
    try:
        client.responses.create(model=args.model, **kw)
    except openai.BadRequestError as e:
        check(e.body.get("param") == param, f"{what}: param {e.body.get('param')!r}, expected {param!r} ({e.body})")
        return e.body["message"]
    check(False, f"{what}: expected a 400")


# --- Text: the same tokens as the chat completion it amounts to ---
question = "Name the capital of France in one word."
r = client.responses.create(model=args.model, instructions="You are terse.", input=question, max_output_tokens=12, temperature=0)
chat = client.chat.completions.create(model=args.model, messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": question}],
                                      max_completion_tokens=12, temperature=0)
check(r.object == "response" and r.id.startswith("resp_") and r.model == args.model, f"response envelope {r.id} {r.model}")
check(r.output_text == chat.choices[0].message.content and r.output_text, f"responses text {r.output_text!r} equals chat's {chat.choices[0].message.content!r}")
check(r.status == ("incomplete" if chat.choices[0].finish_reason == "length" else "completed"), f"status {r.status} for finish_reason {chat.choices[0].finish_reason}")
check(r.usage.input_tokens == chat.usage.prompt_tokens and r.usage.output_tokens == chat.usage.completion_tokens
      and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, f"usage {r.usage} vs {chat.usage}")
check(r.instructions == "You are terse." and r.max_output_tokens == 12 and r.temperature == 0, "the request's fields are repeated")
message = r.output[0]
check(len(r.output) == 1 and message.type == "message" and message.role == "assistant" and message.content[0].type == "output_text", f"one message item: {r.output}")

# The cap: incomplete, with the reason.
capped = client.responses.create(model=args.model, input="Write a long story about a dragon.", max_output_tokens=5, temperature=0)
check(capped.status == "incomplete" and capped.incomplete_details.reason == "max_output_tokens" and capped.usage.output_tokens == 5,
      f"a capped response is incomplete: {capped.status} {capped.incomplete_details}")

# Streamed: the typed events, numbered, adding up to the same response.
events = list(client.responses.create(model=args.model, instructions="You are terse.", input=question, max_output_tokens=12, temperature=0, stream=True))
types = [e.type for e in events]
check(types[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"], f"stream opens: {types[:4]}")
check(types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed" if r.status == "completed" else "response.incomplete"],
      f"stream closes: {types[-4:]}")
check([e.sequence_number for e in events] == list(range(len(events))), "sequence numbers count up from 0")
check("".join(e.delta for e in events if e.type == "response.output_text.delta") == r.output_text, "the deltas add up to the text")
check(events[-1].response.output_text == r.output_text and events[-1].response.usage.output_tokens == r.usage.output_tokens, "the final event holds the whole response")

# The SDK's stream helper checks the order of the events as it accumulates them.
with client.responses.stream(model=args.model, input=question, max_output_tokens=12, temperature=0) as stream:
    final = stream.get_final_response()
check(final.output_text and final.id.startswith("resp_"), f"responses.stream: {final.output_text!r}")

# A conversation as input items, output text parts included.
r2 = client.responses.create(model=args.model, temperature=0, max_output_tokens=16, input=[
    {"role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello Ada!"}]},
    {"role": "user", "content": "What is my name?"}])
check("Ada" in r2.output_text, f"the conversation reaches the model: {r2.output_text!r}")


# --- Structured output: text.format ---
class City(BaseModel):
    name: str
    country: str


parsed = client.responses.parse(model=args.model, input="Give a city in Japan as JSON.", text_format=City, temperature=0, max_output_tokens=60)
check(isinstance(parsed.output_parsed, City), f"responses.parse gives a City: {parsed.output_text!r}")

# --- Tools: flat function tools in, function_call items out, function_call_output back ---


class WeatherArgs(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


tools = [{"type": "function", "name": "get_weather", "description": "Current weather for a city.", "parameters": WeatherArgs.model_json_schema()}]
ask = "What is the weather in Paris, in celsius?"
called = client.responses.create(model=args.model, input=ask, tools=tools, tool_choice="required", temperature=0)
calls = [item for item in called.output if item.type == "function_call"]
check(calls and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_") and calls[0].id.startswith("fc_"), f"a function_call item: {called.output}")
WeatherArgs.model_validate_json(calls[0].arguments)
check(called.tools[0].name == "get_weather" and called.tool_choice == "required", "tools and tool_choice are repeated")
named = client.responses.create(model=args.model, input=ask, tools=tools, tool_choice={"type": "function", "name": "get_weather"}, temperature=0)
check([i.name for i in named.output if i.type == "function_call"] == ["get_weather"], "a named tool_choice calls that function")

streamed = list(client.responses.create(model=args.model, input=ask, tools=tools, tool_choice="required", temperature=0, stream=True))
done = [e for e in streamed if e.type == "response.function_call_arguments.done"]
check(done and done[0].arguments == calls[0].arguments, f"streamed call arguments: {[e.type for e in streamed]}")
check(streamed[-1].type == "response.completed" and [i.type for i in streamed[-1].response.output] == [i.type for i in called.output], "the streamed response has the same items")

# This small model calls the tool again when it may, so the answer is asked for without tools.
answer = client.responses.create(model=args.model, tools=tools, tool_choice="none", temperature=0, max_output_tokens=40, input=[
    {"role": "user", "content": ask}, calls[0].model_dump(exclude_none=True),
    {"type": "function_call_output", "call_id": calls[0].call_id, "output": json.dumps({"temperature": 18, "sky": "cloudy"})}])
check(answer.output_text and "18" in answer.output_text, f"the tool's output gets an answer: {answer.output_text!r}")

# --- Refusals name the field as this API spells it ---
expect_error("previous_response_id", "a stored response", input="hi", previous_response_id="resp_123")
expect_error("input", "no input", instructions="hi")
expect_error("max_output_tokens", "a negative cap", input="hi", max_output_tokens=-1)
expect_error("input[0].type", "an unknown item", input=[{"type": "computer_call", "call_id": "x"}])
expect_error("tools[0]", "a built-in tool", input="hi", tools=[{"type": "web_search"}])
check("stores" in expect_error("input[0]", "an item reference", input=[{"type": "item_reference", "id": "msg_1"}]), "an item reference says why")

# --- openai-agents: an agent that calls a tool and answers, on the default model class ---
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

set_tracing_disabled(True)
asked = []


@function_tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """Current weather for a city."""
    asked.append(city)
    return f"18 degrees {unit} and cloudy in {city}"




async def agents_suite():
    """One event loop for every run: the async client's connections belong to it."""
    model = OpenAIResponsesModel(model=args.model, openai_client=openai.AsyncOpenAI(base_url=args.base_url + "/v1", api_key=args.api_key, max_retries=0))
    # The tool's result is the answer: this small model, asked again with the tool at hand, calls it again.
    agent = Agent(name="weather", instructions="Answer weather questions with the get_weather tool.", tools=[get_weather], model=model,
                  model_settings=ModelSettings(temperature=0, max_tokens=60), tool_use_behavior="stop_on_first_tool")
    result = await Runner.run(agent, ask, max_turns=2)
    check(asked and "Paris" in asked[0], f"the agent called the tool for Paris: {asked}")
    check(result.final_output == f"18 degrees celsius and cloudy in {asked[0]}", f"the agent answers with the tool's result: {result.final_output!r}")

    talker = Agent(name="terse", instructions="You are terse.", model=model, model_settings=ModelSettings(temperature=0, max_tokens=12))
    said = await Runner.run(talker, question, max_turns=1)
    check(said.final_output == r.output_text, f"an agent without tools answers as the API does: {said.final_output!r}")

    run = Runner.run_streamed(talker, question, max_turns=1)
    deltas = "".join([e.data.delta async for e in run.stream_events() if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"])
    check(deltas == run.final_output == r.output_text, f"the streamed agent run gives the same text: {deltas!r} {run.final_output!r}")


asyncio.run(agents_suite())

# --- langchain-openai on the Responses API ---
from langchain_openai import ChatOpenAI

llm = ChatOpenAI(base_url=args.base_url + "/v1", api_key=args.api_key, model=args.model, temperature=0, max_retries=0, use_responses_api=True)
reply = llm.invoke(question)
check(reply.text == r.output_text, f"ChatOpenAI(use_responses_api=True) gives the same text: {reply.content!r}")

print(f"responses_client_test: {checks} checks passed")
