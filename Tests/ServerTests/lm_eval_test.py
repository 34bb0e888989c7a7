"""lm-eval 0.4.13 against a live `apus serve` (started by OpenAIClientTests.swift), on tasks from local files:
a multiple-choice task (log-likelihoods through /v1/completions with echo) and a generation task, with
`local-completions` and `tokenizer_backend=remote` (the server's /tokenizer_info, /tokenize, /detokenize), and the
generation task again with `local-chat-completions` and the chat template.

Usage: python3 lm_eval_test.py --base-url http://127.0.0.1:PORT --model NAME --report FILE
Writes one JSON object to FILE: per task its metrics and, per sample, what the harness sent and got back (the token ids
of each context and continuation as the remote tokenizer split them, each log-likelihood, each generation), for
the caller to recompute independently.
"""
import argparse
import json
import logging
import os
import tempfile

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
logging.disable(logging.WARNING)

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--report", required=True)
args = parser.parse_args()

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

CAPITALS = [
    ("France", "Paris", ["Paris", "London", "Berlin", "Madrid"]),
    ("Germany", "Berlin", ["Rome", "Berlin", "Vienna", "Paris"]),
    ("Italy", "Rome", ["Athens", "Lisbon", "Rome", "Oslo"]),
    ("Japan", "Tokyo", ["Seoul", "Beijing", "Bangkok", "Tokyo"]),
    ("Spain", "Madrid", ["Madrid", "Dublin", "Warsaw", "Prague"]),
    ("England", "London", ["Brussels", "London", "Cairo", "Lima"]),
]

work = tempfile.mkdtemp(prefix="apus-lm-eval-")
data = os.path.join(work, "capitals.jsonl")
with open(data, "w") as f:
    for country, capital, choices in CAPITALS:
        f.write(json.dumps({"country": country, "capital": capital, "choices": choices, "answer": choices.index(capital)}) + "\n")
common = f"""dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
"""
with open(os.path.join(work, "apus_capitals_mc.yaml"), "w") as f:
    f.write("task: apus_capitals_mc\n" + common + """output_type: multiple_choice
doc_to_text: "Question: What is the capital of {{country}}?\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
""")
with open(os.path.join(work, "apus_capitals_gen.yaml"), "w") as f:
    f.write("task: apus_capitals_gen\n" + common + """output_type: generate_until
doc_to_text: "The capital of {{country}} is"
doc_to_target: " {{capital}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""")
tasks = TaskManager(include_path=work)


def evaluate(model, model_args, task, **kw):
    result = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task], task_manager=tasks, log_samples=True, **kw)
    return result["results"][task], result["samples"][task]


completions = f"model={args.model},base_url={args.base_url}/v1/completions,tokenizer_backend=remote,num_concurrent=2,max_retries=1"
# The remote tokenizer the harness used: the split it made of each pair is what the caller scores.
from lm_eval.models.openai_completions import LocalCompletionsAPI  # noqa: E402

tokenizer = LocalCompletionsAPI(model=args.model, base_url=f"{args.base_url}/v1/completions", tokenizer_backend="remote")

report = {}
metrics, samples = evaluate("local-completions", completions, "apus_capitals_mc")
report["mc"] = {"acc": metrics["acc,none"], "samples": []}
for s in samples:
    pairs = []
    for (context, continuation), resp in zip(s["arguments"], s["resps"]):
        ids = tokenizer._encode_pair(context, continuation)
        pairs.append({"context": ids[0], "continuation": ids[1], "loglikelihood": resp[0][0]})
    report["mc"]["samples"].append({"answer": s["doc"]["answer"], "acc": s["acc"], "pairs": pairs})

metrics, samples = evaluate("local-completions", completions, "apus_capitals_gen")
report["gen"] = {"exact_match": metrics["exact_match,none"],
                 "samples": [{"prompt": s["arguments"][0][0], "generation": s["resps"][0][0], "target": s["target"]} for s in samples]}

chat = f"model={args.model},base_url={args.base_url}/v1/chat/completions,num_concurrent=2,max_retries=1"
metrics, samples = evaluate("local-chat-completions", chat, "apus_capitals_gen", apply_chat_template=True)
report["chat"] = {"exact_match": metrics["exact_match,none"],
                  "samples": [{"messages": json.loads(s["arguments"][0][0].prompt), "generation": s["resps"][0][0]} for s in samples]}
with open(args.report, "w") as f:
    json.dump(report, f)
print(f"lm_eval_test: mc acc {report['mc']['acc']}, generation exact_match {report['gen']['exact_match']}, chat exact_match {report['chat']['exact_match']}")
