"""The official `openai` client against a live `apus serve` (started by OpenAIClientTests.swift).

Usage: python3 openai_client_test.py --base-url http://127.0.0.1:PORT --api-key KEY --model NAME --suite main|overload
Exits non-zero, naming the check, at the first failure.
"""
import argparse
import concurrent.futures
import http.client
import json
import sys
import time
import urllib.parse

import openai

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", required=True)
parser.add_argument("--api-key", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--suite", default="main")
args = parser.parse_args()

client = openai.OpenAI(base_url=args.base_url + "/v1", api_key=args.api_key, max_retries=0, timeout=120)
auth = {"Authorization": f"Bearer {args.api_key}"}
address = urllib.parse.urlparse(args.base_url)
checks = 0


class Raw:
    """An HTTP exchange with the standard library, for what the client does not send."""

    def __init__(self, method, path, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        self.status_code = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.content = response.read()
        conn.close()

    @property
    def text(self):
        return self.content.decode()

    def json(self):
        return json.loads(self.content)


def open_stream(path, body):
    """A streaming POST; returns the connection and response, to read lines from and close."""
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    conn.request("POST", path, body=json.dumps(body).encode(), headers={**auth, "Content-Type": "application/json"})
    return conn, conn.getresponse()


def check(condition, what):
    global checks
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def expect_error(kind, status, param, call, code=None, what=""):
    try:
        call()
    except kind as e:
        check(e.status_code == status, f"{what}: status {e.status_code}, expected {status}")
        body = e.body if isinstance(e.body, dict) else {}
        check(body.get("param") == param, f"{what}: param {body.get('param')!r}, expected {param!r}")
        check(isinstance(body.get("message"), str) and body["message"], f"{what}: a message")
        if code is not None:
            check(body.get("code") == code, f"{what}: code {body.get('code')!r}, expected {code!r}")
        return body
    check(False, f"{what}: expected {kind.__name__}")


def metric(name):
    text = Raw("GET", "/metrics", headers=auth).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return None


def main_suite():
    # Models and health.
    models = client.models.list()
    check([m.id for m in models.data] == [args.model], f"models: {[m.id for m in models.data]}")
    check(Raw("GET", "/health").status_code == 200, "health is open without a key")

    # Completions, greedy: the golden continuation.
    c = client.completions.create(model=args.model, prompt="The capital of France is", max_tokens=8, temperature=0)
    check(c.choices[0].text == " Paris.\n\nThe United States has", f"completion text {c.choices[0].text!r}")
    check(c.choices[0].finish_reason == "length", "completion finish_reason length")
    check(c.usage.prompt_tokens == 5 and c.usage.completion_tokens == 8 and c.usage.total_tokens == 13, f"usage {c.usage}")
    check(c.id.startswith("cmpl-") and c.object == "text_completion" and c.model == args.model and c.system_fingerprint, "completion envelope")

    # Stop strings.
    s = client.completions.create(model=args.model, prompt="The capital of France is", max_tokens=40, temperature=0, stop=["United"])
    check(s.choices[0].text == " Paris.\n\nThe " and s.choices[0].finish_reason == "stop", f"stop string: {s.choices[0].text!r}")

    # Streaming equals the whole response; usage at the end when asked.
    pieces, finish, usage = [], None, None
    for chunk in client.completions.create(model=args.model, prompt="The capital of France is", max_tokens=8, temperature=0,
                                           stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            pieces.append(ch.text)
            finish = ch.finish_reason or finish
    check("".join(pieces) == c.choices[0].text, f"streamed completion {''.join(pieces)!r}")
    check(finish == "length" and usage and usage.completion_tokens == 8, f"streamed finish {finish}, usage {usage}")

    # Chat, whole and streamed.
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(model=args.model, messages=messages, max_tokens=24, temperature=0)
    text = chat.choices[0].message.content
    check(chat.choices[0].message.role == "assistant" and text, "chat message")
    check(chat.choices[0].finish_reason in ("stop", "length"), "chat finish_reason")
    check(chat.object == "chat.completion" and chat.id.startswith("chatcmpl-"), "chat envelope")
    streamed, roles = [], set()
    for chunk in client.chat.completions.create(model=args.model, messages=messages, max_tokens=24, temperature=0, stream=True):
        for ch in chunk.choices:
            if ch.delta.role:
                roles.add(ch.delta.role)
            streamed.append(ch.delta.content or "")
    check("".join(streamed) == text and roles == {"assistant"}, f"streamed chat {''.join(streamed)!r} vs {text!r}")

    # n > 1 and seeds: the same seed reproduces, samples differ from each other.
    a = client.completions.create(model=args.model, prompt="Once upon a time", max_tokens=16, temperature=1.0, seed=42, n=3,
                                  extra_body={"ignore_eos": True})
    b = client.completions.create(model=args.model, prompt="Once upon a time", max_tokens=16, temperature=1.0, seed=42, n=3,
                                  extra_body={"ignore_eos": True})
    check(sorted(ch.index for ch in a.choices) == [0, 1, 2], "n=3 gives three choices")
    check([ch.text for ch in a.choices] == [ch.text for ch in b.choices], "a seed reproduces every sample")
    check(len({ch.text for ch in a.choices}) > 1, "samples differ")
    check(a.usage.completion_tokens == 48 and a.usage.prompt_tokens == 4, f"usage counts every sample once: {a.usage}")
    chat_n = client.chat.completions.create(model=args.model, messages=messages, max_tokens=8, temperature=0.8, seed=1, n=2)
    check(len(chat_n.choices) == 2, "chat n=2")

    # Logprobs.
    lp = client.completions.create(model=args.model, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=3)
    info = lp.choices[0].logprobs
    check(len(info.tokens) == 5 and len(info.token_logprobs) == 5 and len(info.top_logprobs) == 5, "completion logprobs lengths")
    check(all(v <= 0 for v in info.token_logprobs), "logprobs are log-probabilities")
    check(all(1 <= len(t) <= 3 for t in info.top_logprobs), "top_logprobs has at most 3 entries")
    check(info.tokens[0] == " Paris" and max(info.top_logprobs[0].values()) == info.token_logprobs[0], "greedy picks the top token")
    clp = client.chat.completions.create(model=args.model, messages=messages, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = clp.choices[0].logprobs.content
    check(len(content) == 4 and all(len(t.top_logprobs) == 2 for t in content), "chat logprobs")

    # Echo, as evaluation harnesses score: lm-eval's local-completions sends token ids, echo,
    # logprobs 1 and max_tokens 1, and sums token_logprobs[context:-1].
    question = "The capital of France is Paris"
    scored = client.completions.create(model=args.model, prompt=question, max_tokens=0, echo=True, logprobs=1, temperature=0)
    info = scored.choices[0].logprobs
    check(scored.choices[0].text == question and scored.choices[0].finish_reason == "length", f"echo with max_tokens 0 answers the prompt ({scored.choices[0].text!r})")
    check("".join(info.tokens) == question and info.token_logprobs[0] is None and info.top_logprobs[0] is None
          and all(v < 0 for v in info.token_logprobs[1:]) and len(info.tokens) == 6, f"each prompt token's log-probability, the first null ({info.token_logprobs})")
    check(info.tokens[5] == " Paris" and abs(info.token_logprobs[5] - lp.choices[0].logprobs.token_logprobs[0]) < 1e-3,
          "a prompt token scores as the same token generated after the same text")
    check(info.text_offset == [0, 3, 11, 14, 21, 24], f"text offsets ({info.text_offset})")
    harness = client.completions.create(model=args.model, prompt=[[504, 3575, 282, 4649, 314, 7042]], max_tokens=1, echo=True, logprobs=1, temperature=0)
    hl = harness.choices[0].logprobs
    check(len(hl.token_logprobs) == 7 and abs(sum(hl.token_logprobs[5:-1]) - info.token_logprobs[5]) < 1e-3 and hl.token_logprobs[5] == max(hl.top_logprobs[5].values()),
          "token ids with max_tokens 1: lm-eval's slice scores the continuation, greedy")
    vllm = Raw("POST", "/v1/completions", {"model": args.model, "prompt": question, "max_tokens": 1, "prompt_logprobs": 2, "temperature": 0}, auth).json()
    entries = vllm["choices"][0]["prompt_logprobs"]
    check(entries[0] is None and len(entries) == 6 and abs(entries[5]["7042"]["logprob"] - info.token_logprobs[5]) < 1e-3
          and entries[5]["7042"]["decoded_token"] == " Paris", f"vLLM's prompt_logprobs ({entries[5] if len(entries) > 5 else entries})")
    echoed = "".join(ch.choices[0].text for ch in client.completions.create(model=args.model, prompt=question, max_tokens=3, echo=True, temperature=0, stream=True))
    whole = client.completions.create(model=args.model, prompt=question, max_tokens=3, echo=True, temperature=0)
    check(echoed == whole.choices[0].text and echoed.startswith(question) and len(echoed) > len(question), f"a streamed echo equals the whole one ({echoed!r})")

    # logit_bias: -100 bans the greedy choice, +100 forces a token.
    banned = client.completions.create(model=args.model, prompt="The capital of France is", max_tokens=1, temperature=0, logprobs=1,
                                       logit_bias={"7042": -100})
    check(banned.choices[0].logprobs.tokens[0] != " Paris", f"logit_bias -100 bans a token: {banned.choices[0].text!r}")
    forced = client.completions.create(model=args.model, prompt="The capital of France is", max_tokens=3, temperature=0, logit_bias={"30": 100})
    check(forced.choices[0].text == "...", f"logit_bias +100 forces a token: {forced.choices[0].text!r}")
    expect_error(openai.BadRequestError, 400, "logit_bias",
                 lambda: client.completions.create(model=args.model, prompt="x", logit_bias={"99999999": 1}), what="logit_bias token")

    # Token ids as the prompt; tokenize and detokenize.
    ids = Raw("POST", "/tokenize", {"prompt": "The capital of France is"}, auth).json()
    check(ids["tokens"] == [504, 3575, 282, 4649, 314] and ids["count"] == 5, f"tokenize {ids}")
    text = Raw("POST", "/detokenize", {"tokens": ids["tokens"]}, auth).json()
    check(text == {"prompt": "The capital of France is"}, f"detokenize {text}")
    info = Raw("GET", "/tokenizer_info", None, auth).json()
    check(info["eos_token"] == "<|im_end|>" and info["bos_token"] == "<|im_start|>" and info["vocab_size"] == 49152
          and info["model_max_length"] == 2048 and info["chat_template"].startswith("{% for message in messages %}"),
          f"tokenizer_info {dict((k, v) for k, v in info.items() if k != 'chat_template')}")
    eos = Raw("POST", "/tokenize", {"prompt": info["eos_token"], "add_special_tokens": False}, auth).json()
    check(eos["tokens"] == [2], f"the eos text tokenizes to its id, as lm-eval's remote tokenizer reads it: {eos}")
    by_ids = client.completions.create(model=args.model, prompt=ids["tokens"], max_tokens=8, temperature=0)
    check(by_ids.choices[0].text == c.choices[0].text, "token-id prompt")
    two = client.completions.create(model=args.model, prompt=["The capital of France is", "Once upon a time"], max_tokens=4, temperature=0)
    check([ch.index for ch in two.choices] == [0, 1] and two.choices[0].text == " Paris.\n\n", f"a list of prompts: {two.choices}")

    # Embeddings: mean-pooled final hidden states, unit length, as llama-server --embeddings --pooling mean gives them
    # (embeddings_reference.json, recorded from it); the client asks for base64 unless told floats.
    reference = json.load(open(__file__.replace("openai_client_test.py", "embeddings_reference.json")))
    encoded = client.embeddings.create(model=args.model, input=reference["inputs"])
    floats = client.embeddings.create(model=args.model, input=reference["inputs"], encoding_format="float")
    check([d.index for d in floats.data] == list(range(len(reference["inputs"]))) and floats.object == "list" and floats.model == args.model,
          "embeddings envelope")
    check(all(len(d.embedding) == 576 for d in floats.data), "576 dimensions, SmolLM2's width")
    check(all(abs(sum(x * x for x in d.embedding) - 1) < 1e-4 for d in floats.data), "unit length")
    check(all(max(abs(a - b) for a, b in zip(e.embedding, f.embedding)) < 1e-6 for e, f in zip(encoded.data, floats.data)), "base64 and floats agree")
    tokens = sum(Raw("POST", "/tokenize", {"prompt": t}, auth).json()["count"] for t in reference["inputs"])
    check(floats.usage.prompt_tokens == tokens == floats.usage.total_tokens, f"embedding usage {floats.usage} for {tokens} tokens")

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / (sum(x * x for x in a) * sum(y * y for y in b)) ** 0.5

    alone = [client.embeddings.create(model=args.model, input=t, encoding_format="float").data[0].embedding for t in reference["inputs"]]
    check(alone == [d.embedding for d in floats.data], "a batch of inputs embeds each as it embeds alone")
    for text, mine, theirs in zip(reference["inputs"], floats.data, reference["embeddings"]):
        check(cosine(mine.embedding, theirs) >= 0.99, f"cosine {cosine(mine.embedding, theirs):.4f} with llama-server's embedding of {text!r}")
    by_ids = client.embeddings.create(model=args.model, input=ids["tokens"], encoding_format="float").data[0].embedding
    same = client.embeddings.create(model=args.model, input="The capital of France is", encoding_format="float").data[0].embedding
    check(by_ids == same, "token ids embed as their text does")
    raw = Raw("POST", "/v1/embeddings", {"input": "x", "dimensions": 8}, auth)
    check(raw.status_code == 400 and raw.json()["error"]["param"] == "dimensions" and "576" in raw.json()["error"]["message"], f"dimensions: {raw.text}")
    raw = Raw("POST", "/v1/embeddings", {"input": [""]}, auth)
    check(raw.status_code == 400 and raw.json()["error"]["param"] == "input", f"an empty input: {raw.text}")
    raw = Raw("POST", "/v1/embeddings", {"input": "x", "encoding_format": "int8"}, auth)
    check(raw.status_code == 400 and raw.json()["error"]["param"] == "encoding_format", f"encoding_format: {raw.text}")

    # Errors: 400 naming the parameter.
    bad = openai.BadRequestError
    m = args.model
    expect_error(bad, 400, "temperature", lambda: client.completions.create(model=m, prompt="x", temperature=2.5), what="temperature")
    expect_error(bad, 400, "temperature", lambda: client.completions.create(model=m, prompt="x", extra_body={"temperature": "hot"}), what="temperature type")
    expect_error(bad, 400, "top_p", lambda: client.completions.create(model=m, prompt="x", top_p=0), what="top_p 0")
    expect_error(bad, 400, "top_p", lambda: client.completions.create(model=m, prompt="x", top_p=1.5), what="top_p 1.5")
    expect_error(bad, 400, "top_k", lambda: client.completions.create(model=m, prompt="x", extra_body={"top_k": -2}), what="top_k")
    expect_error(bad, 400, "max_tokens", lambda: client.completions.create(model=m, prompt="x", max_tokens=0), what="max_tokens")
    expect_error(bad, 400, "presence_penalty", lambda: client.completions.create(model=m, prompt="x", presence_penalty=3), what="presence")
    expect_error(bad, 400, "frequency_penalty", lambda: client.completions.create(model=m, prompt="x", frequency_penalty=-2.5), what="frequency")
    expect_error(bad, 400, "n", lambda: client.completions.create(model=m, prompt="x", n=17), what="n cap")
    expect_error(bad, 400, "top_logprobs", lambda: client.chat.completions.create(model=m, messages=messages, logprobs=True, top_logprobs=21), what="top_logprobs")
    expect_error(bad, 400, "stop", lambda: client.completions.create(model=m, prompt="x", stop=["a", "b", "c", "d", "e"]), what="five stops")
    expect_error(bad, 400, "stop", lambda: client.completions.create(model=m, prompt="x", stop=["s" * 2000]), what="long stop")
    expect_error(bad, 400, "prompt", lambda: client.completions.create(model=m, prompt=""), what="empty prompt")
    body = expect_error(bad, 400, "prompt", lambda: client.completions.create(model=m, prompt="The capital of France is", max_tokens=5000),
                        code="context_length_exceeded", what="context")
    check("2048" in body["message"] and "5005" in body["message"], f"context message gives the numbers: {body['message']}")
    expect_error(bad, 400, "messages", lambda: client.chat.completions.create(model=m, messages=[]), what="empty messages")
    other = client.completions.create(model="gpt-3.5-turbo", prompt="x", max_tokens=1)
    check(other.model == m and other.choices, f"a request naming another model is served by the one model ({other.model})")
    check(client.completions.create(model=m, prompt="x", max_tokens=1, extra_body={"an_unknown_field": 1}).choices, "unknown fields are ignored")

    # Raw HTTP errors.
    raw = Raw("POST", "/v1/completions", b"{not json", {**auth, "Content-Type": "application/json"})
    check(raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error", f"invalid JSON: {raw.status_code}")
    raw = Raw("POST", "/v1/completions", b'{"prompt": "\xff\xfe"}', {**auth, "Content-Type": "application/json"})
    check(raw.status_code == 400 and "UTF-8" in raw.json()["error"]["message"], f"invalid UTF-8: {raw.status_code}")
    raw = Raw("POST", "/v1/completions", {"prompt": "x" * (2 << 20)}, auth)
    check(raw.status_code == 413 and "error" in raw.json(), f"large body: {raw.status_code}")
    raw = Raw("GET", "/v1/models", headers={**auth, "X-Large": "y" * 20000})
    check(raw.status_code == 431 and "error" in raw.json(), f"large headers: {raw.status_code}")
    raw = Raw("GET", "/v2/nothing", headers=auth)
    check(raw.status_code == 404 and raw.json()["error"]["code"] == "not_found", f"unknown route: {raw.status_code}")
    expect_error(openai.AuthenticationError, 401, None,
                 lambda: openai.OpenAI(base_url=args.base_url + "/v1", api_key="wrong", max_retries=0).models.list(), code="invalid_api_key", what="wrong key")
    raw = Raw("GET", "/v1/models")
    check(raw.status_code == 401, f"missing key: {raw.status_code}")

    # A client that disconnects mid-stream: its blocks are released.
    conn, r = open_stream("/v1/completions", {"model": m, "prompt": "Once upon a time", "max_tokens": 2000, "stream": True, "ignore_eos": True})
    lines = 0
    while lines < 3:
        line = r.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            lines += 1
    conn.close()
    check(lines == 3, "the stream started")
    deadline = time.time() + 10
    while time.time() < deadline and metric("apus_kv_cache_blocks_used") != 0:
        time.sleep(0.05)
    check(metric("apus_kv_cache_blocks_used") == 0, "KV blocks return to zero after a disconnect")
    check(metric("apus_num_requests_running") == 0, "nothing left running")

    # A client that disconnects while waiting for a whole (non-streamed) answer: aborted too,
    # within a few steps, long before the 2,000 tokens it asked for could be generated.
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    conn.request("POST", "/v1/completions", body=json.dumps({"model": m, "prompt": "Once upon a time", "max_tokens": 2000,
                                                              "ignore_eos": True}).encode(),
                 headers={**auth, "Content-Type": "application/json"})
    deadline = time.time() + 10
    while time.time() < deadline and not metric("apus_kv_cache_blocks_used"):
        time.sleep(0.02)
    check(metric("apus_kv_cache_blocks_used") > 0, "the non-streamed request is running")
    conn.close()
    closed = time.time()
    while time.time() < closed + 3 and metric("apus_kv_cache_blocks_used") != 0:
        time.sleep(0.02)
    check(metric("apus_kv_cache_blocks_used") == 0, "KV blocks return to zero after a non-streamed client disconnects")
    check(metric("apus_num_requests_running") == 0, "nothing left running after the non-streamed disconnect")

    # Load: 200 requests at concurrency 32, zero errors.
    def one(i):
        r = client.completions.create(model=m, prompt=f"Request {i}: count to ten.", max_tokens=8, temperature=0.7, seed=i)
        return r.usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(200)))
    check(len(results) == 200 and all(1 <= n <= 8 for n in results), "200 requests at concurrency 32 all answered")
    check(metric("apus_requests_total{status=\"200\"}") is not None or metric("apus_requests_total") is not None, "request counter")
    text = Raw("GET", "/metrics", headers=auth).text
    for name in ["apus_requests_total", "apus_prompt_tokens_total", "apus_generation_tokens_total", "apus_time_to_first_token_seconds_bucket",
                 "apus_inter_token_latency_seconds_bucket", "apus_e2e_request_latency_seconds_bucket", "apus_request_queue_time_seconds_bucket",
                 "apus_num_requests_running", "apus_num_requests_waiting", "apus_kv_cache_blocks_used", "apus_prefix_cache_hit_ratio"]:
        check(name in text, f"metric {name}")


def overload_suite():
    # The engine runs two sequences at a time and the server lets two wait: the rest get 429.
    def one(i):
        try:
            client.completions.create(model=args.model, prompt=f"Story {i}:", max_tokens=48, temperature=0, extra_body={"ignore_eos": True})
            return "ok"
        except openai.RateLimitError as e:
            check(e.response.headers.get("retry-after") == "1", "429 carries Retry-After")
            check(e.body.get("code") == "rate_limit_exceeded", "429 code")
            return "429"

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(one, range(16)))
    check(outcomes.count("429") >= 1 and outcomes.count("ok") >= 1, f"overload outcomes {outcomes}")

    # A stream queued behind two long requests gets SSE comments while it waits. The stream is
    # sent once both run, and they run long enough (600 tokens, two seconds on the fastest machine
    # here) that it waits many keep-alive intervals.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        long = [pool.submit(client.completions.create, model=args.model, prompt=f"Long {i}:", max_tokens=600, temperature=0,
                            extra_body={"ignore_eos": True}) for i in range(2)]
        started = time.time()
        while time.time() < started + 10 and metric("apus_num_requests_running") != 2:
            time.sleep(0.01)
        check(metric("apus_num_requests_running") == 2, "both long requests run")
        conn, r = open_stream("/v1/completions", {"model": args.model, "prompt": "Hello", "max_tokens": 4, "stream": True})
        body = r.read().decode()
        conn.close()
        for f in long:
            f.result()
    check(": keep-alive" in body, "keep-alive comments while queued")
    check(body.rstrip().endswith("data: [DONE]"), "the stream ends with [DONE]")


{"main": main_suite, "overload": overload_suite}[args.suite]()
print(f"{args.suite}: {checks} checks passed")
