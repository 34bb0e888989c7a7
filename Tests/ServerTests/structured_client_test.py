"""Structured output and tool calling through the official `openai` client and langchain-openai,
against a live server on Qwen2.5-Coder-0.5B-Instruct (started by StructuredOutputClientTests.swift).

Usage: python3 structured_client_test.py --base-url http://127.0.0.1:PORT --api-key KEY --model NAME
Exits non-zero, naming the check, at the first failure.
"""
import argparse
import enum
import json
import sys
from typing import List, Literal, Optional

import openai
from pydantic import BaseModel, Field

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


def chat(content, **kw):
    return client.chat.completions.create(model=args.model, messages=[{"role": "user", "content": content}], **kw)


# --- Structured output: pydantic models the grammar tests never saw, under tight caps ---

class Color(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    street: str
    city: str
    zip_code: str = Field(pattern=r"^[0-9]{5}$")


class Customer(BaseModel):
    name: str = Field(max_length=30)
    age: int = Field(ge=18, le=99)
    favorite: Color
    address: Address
    nickname: Optional[str] = None


class Reading(BaseModel):
    sensor: Literal["temp", "humidity"]
    values: List[float] = Field(min_length=1, max_length=4)
    ok: bool


class Poll(BaseModel):
    question: str
    answer: int | str
    tags: List[str] = Field(max_length=3)


for model, prompt in [(Customer, "Invent a customer."), (Reading, "Report a temperature reading."), (Poll, "Ask me a poll question and answer it.")]:
    completion = client.chat.completions.parse(model=args.model, messages=[{"role": "user", "content": prompt}],
                                               response_format=model, temperature=0)
    parsed = completion.choices[0].message.parsed
    check(isinstance(parsed, model), f"parse({model.__name__}) returns a {model.__name__}: {completion.choices[0].message.content!r}")
    for cap in (30, 36):
        r = chat(prompt, max_tokens=cap, temperature=0.9, seed=cap,
                 response_format={"type": "json_schema", "json_schema": {"name": model.__name__, "schema": model.model_json_schema(), "strict": True}})
        text = r.choices[0].message.content
        try:
            model.model_validate_json(text)
        except Exception as e:
            check(False, f"{model.__name__} under max_tokens={cap} validates: {text!r}: {e}")
        check(r.usage.completion_tokens <= cap, f"{model.__name__}: at most {cap} tokens")
        check(r.choices[0].finish_reason in ("stop", "length"), "finish_reason stop or length")

r = chat("List three fruits.", max_tokens=25, response_format={"type": "json_object"}, temperature=0.7, seed=3)
check(isinstance(json.loads(r.choices[0].message.content), dict), f"json_object parses: {r.choices[0].message.content!r}")

r = chat("Is the sky blue? Answer yes or no.", extra_body={"guided_choice": ["yes", "no"]}, temperature=0)
check(r.choices[0].message.content in ("yes", "no"), f"guided_choice: {r.choices[0].message.content!r}")
r = chat("Give me a US zip code.", extra_body={"guided_regex": "[0-9]{5}"}, temperature=0)
check(len(r.choices[0].message.content) == 5 and r.choices[0].message.content.isdigit(), f"guided_regex: {r.choices[0].message.content!r}")
r = chat("Say hi.", extra_body={"grammar": 'root ::= "hi " [a-z]{1,10}'}, temperature=0)
check(r.choices[0].message.content.startswith("hi "), f"grammar: {r.choices[0].message.content!r}")

try:
    chat("x", response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "string", "contentMediaType": "text/html"}}})
    check(False, "an unsupported schema keyword is refused")
except openai.BadRequestError as e:
    check("contentMediaType" in e.body["message"], f"the refusal names the keyword: {e.body}")
try:
    chat("x", extra_body={"grammar": "root ::= missing"})
    check(False, "an undefined grammar rule is refused")
except openai.BadRequestError as e:
    check("missing" in e.body["message"], f"the refusal names the rule: {e.body}")

# --- Tool calling ---


class WeatherArgs(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


class TimeArgs(BaseModel):
    timezone: str


tools = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.", "parameters": WeatherArgs.model_json_schema()}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone.", "parameters": TimeArgs.model_json_schema()}},
]
argument_models = {"get_weather": WeatherArgs, "get_time": TimeArgs}
question = "What is the weather in Paris, in celsius?"

for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}, "auto"):
    r = chat(question, tools=tools, tool_choice=choice, temperature=0)
    message = r.choices[0].message
    check(message.tool_calls, f"tool_choice {choice}: tool calls, got {message.content!r}")
    check(r.choices[0].finish_reason == "tool_calls", f"tool_choice {choice}: finish_reason tool_calls")
    for call in message.tool_calls:
        argument_models[call.function.name].model_validate_json(call.function.arguments)
        check(call.id.startswith("call_") and call.type == "function", "call id and type")
    if isinstance(choice, dict):
        check(all(c.function.name == "get_weather" for c in message.tool_calls), "a named function is the one called")

    # Streamed: the deltas add up to the same kind of calls.
    stream = chat(question, tools=tools, tool_choice=choice, temperature=0, stream=True)
    calls, reason = {}, None
    for chunk in stream:
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"name": "", "arguments": "", "id": None})
                entry["id"] = d.id or entry["id"]
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
            reason = c.finish_reason or reason
    check(calls and reason == "tool_calls", f"streamed tool_choice {choice}: calls and finish_reason tool_calls, got {calls} {reason}")
    for entry in calls.values():
        argument_models[entry["name"]].model_validate_json(entry["arguments"])

r = chat(question, tools=tools, tool_choice="none", temperature=0, max_tokens=40)
check(not r.choices[0].message.tool_calls, "tool_choice none: no calls")

# The tool's answer goes back and the model answers.
first = chat(question, tools=tools, tool_choice="required", temperature=0).choices[0].message
history = [{"role": "user", "content": question}, first.model_dump(exclude_none=True),
           {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": json.dumps({"temperature": 18, "sky": "cloudy"})}]
r = client.chat.completions.create(model=args.model, messages=history, tools=tools, temperature=0, max_tokens=60)
answer = r.choices[0].message
check(answer.content or answer.tool_calls, "the tool's answer gets a reply")

# --- langchain-openai ---
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """Current weather for a city."""
    return "18 degrees"


llm = ChatOpenAI(base_url=args.base_url + "/v1", api_key=args.api_key, model=args.model, temperature=0, max_retries=0)
reply = llm.bind_tools([get_weather], tool_choice="required").invoke(question)
check(reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather", f"bind_tools: a get_weather call, got {reply}")
WeatherArgs.model_validate(reply.tool_calls[0]["args"])
reply = llm.bind_tools([get_weather]).invoke(question)
check(reply.tool_calls, f"bind_tools with auto: a call, got {reply.content!r}")
structured = llm.with_structured_output(Customer).invoke("Invent a customer.")
check(isinstance(structured, Customer), f"with_structured_output returns a Customer: {structured!r}")
structured = llm.with_structured_output(Reading, method="function_calling").invoke("Report a humidity reading.")
check(isinstance(structured, Reading), f"with_structured_output by function calling returns a Reading: {structured!r}")

print(f"structured_client_test: {checks} checks passed")
