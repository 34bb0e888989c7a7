"""The chat page at `GET /` in headless Chromium, driven over the DevTools protocol on a pipe (no client library),
against a live server that needs an API key (started by OpenAIClientTests.swift).

Usage: python3 chat_page_test.py --base-url http://127.0.0.1:PORT --api-key KEY --model NAME --browser PATH [--screenshot PNG]
(--screenshot saves the page after two turns: docs/chat-page.png comes from it)
Exits non-zero, naming the check, at the first failure.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", required=True)
parser.add_argument("--api-key", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--browser", required=True)
parser.add_argument("--screenshot")
args = parser.parse_args()
checks = 0


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


def check(condition, what):
    global checks
    if not condition:
        fail(what)
    checks += 1


class Browser:
    """Chromium with --remote-debugging-pipe: DevTools messages as NUL-terminated JSON on fds 3 (in) and 4 (out)."""

    def __init__(self, path):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # The child's fds 3 and 4 are the pipe ends, put there after fork (closing the
        # parent's other fds would close them again, so none are closed).
        def wire():
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)
        self.process = subprocess.Popen(
            [path, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={tempfile.mkdtemp()}", "about:blank"],
            close_fds=False, preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer = b""
        self.next_id = 0
        self.session = None

    def call(self, method, params=None, session=True):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_browser, 1 << 16)
                if not chunk:
                    fail(f"the browser exited before answering {method}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    fail(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url):
        pages = [t for t in self.call("Target.getTargets", session=False)["targetInfos"] if t["type"] == "page"]
        self.session = self.call("Target.attachToTarget", {"targetId": pages[0]["targetId"], "flatten": True}, session=False)["sessionId"]
        self.call("Page.navigate", {"url": url})

    def eval(self, expression):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            fail(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression, what, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        fail(f"waited {seconds} s for {what}")

    def close(self):
        self.process.kill()
        self.process.wait()


def chat(messages, max_tokens):
    request = urllib.request.Request(args.base_url + "/v1/chat/completions", method="POST", headers={
        "Authorization": f"Bearer {args.api_key}", "Content-Type": "application/json"},
        data=json.dumps({"model": args.model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}).encode())
    return json.load(urllib.request.urlopen(request))["choices"][0]["message"]["content"]


page = urllib.request.urlopen(args.base_url + "/")
check(page.headers["Content-Type"].startswith("text/html") and "Content-Security-Policy" in page.headers, "GET / is an HTML page with a CSP")

browser = Browser(args.browser)
try:
    browser.open(args.base_url + "/")
    browser.call("Emulation.setDeviceMetricsOverride", {"width": 960, "height": 640, "deviceScaleFactor": 1, "mobile": False})
    browser.wait("document.readyState === 'complete'", "the page to load")
    # Without the key the models list fails, and says why.
    browser.wait("document.getElementById('status').textContent.length > 0", "the page to say the key is missing")
    check("API key" in browser.eval("document.getElementById('status').textContent"), "the page shows the 401's message")
    browser.eval(f"""const key = document.getElementById('key'); key.value = {json.dumps(args.api_key)}; key.dispatchEvent(new Event('change'));""")
    names = browser.wait("[...document.getElementById('model').options].map(o => o.value).join(',')", "the models list")
    check(names == args.model, f"the models list names the served model: {names}")

    def say(text):
        # Read in the same evaluation as the click: send() disables the button before its first
        # await, and a fast reply (or an error) may enable it again before a later poll.
        sending = browser.eval(f"""document.getElementById('prompt').value = {json.dumps(text)}; document.getElementById('send').click();
                                  document.getElementById('send').disabled""")
        check(sending, "the page sends")
        browser.wait("!document.getElementById('send').disabled", "the reply to finish")
        return browser.eval("[...document.querySelectorAll('.message.assistant')].map(m => m.dataset.text)")

    browser.eval("document.getElementById('temperature').value = '0'; document.getElementById('max-tokens').value = '12';")
    first = say("What is the capital of France?")
    expected = chat([{"role": "user", "content": "What is the capital of France?"}], 12)
    check(first == [expected] and expected, f"the streamed reply is the chat completion's: {first} vs {expected!r}")
    check("tokens/s" in browser.eval("document.getElementById('status').textContent"), "the status shows the speed")
    second = say("And of Italy?")
    expected_second = chat([{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": expected},
                            {"role": "user", "content": "And of Italy?"}], 12)
    check(second == [expected, expected_second], f"the second turn carries the conversation: {second} vs {expected_second!r}")
    check(browser.eval("document.querySelectorAll('.message.user').length") == 2, "both questions are shown")
    if args.screenshot:
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"})["data"]))

    # Replies render as Markdown, built from text: markup a model writes stays text.
    rendered = browser.eval("""(() => { const d = document.createElement('div');
        markdown(d, '# Title\\n\\n- one\\n- **two** and `x`\\n\\n```python\\nprint(1 < 2)\\n```\\nafter <img src=x onerror=alert(1)>');
        return d.innerHTML; })()""")
    check(rendered == '<h1>Title</h1><ul><li>one</li><li><strong>two</strong> and <code>x</code></li></ul>'
          '<pre><code data-language="python">print(1 &lt; 2)</code></pre><p>after &lt;img src=x onerror=alert(1)&gt;</p>', f"markdown: {rendered}")

    # An error from the server is shown, and the conversation is kept as it was.
    browser.eval("document.getElementById('max-tokens').value = '999999';")
    say("Tell me more.")
    error = browser.eval("document.querySelector('.message.error') && document.querySelector('.message.error').textContent")
    check(error and "context length" in error, f"the server's error is shown: {error!r}")
    check(browser.eval("document.querySelectorAll('.message.assistant').length") == 2, "a failed reply leaves no empty bubble")
finally:
    browser.close()
print(f"chat_page_test: {checks} checks passed")
