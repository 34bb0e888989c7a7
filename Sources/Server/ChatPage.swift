/// The chat page `GET /` serves, as llama-server serves one: one self-contained HTML file
/// (no external scripts, styles or fonts) that streams `/v1/chat/completions` for the
/// model picked from `/v1/models`. Text is shown as text (`textContent`), never as HTML,
/// so a model cannot inject markup. An API key, when the server needs one, is typed into
/// the page and kept in the browser's local storage.
enum ChatPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Apus</title>
    <style>
      :root { color-scheme: light dark; --line: #8884; --me: #3b82f622; }
      body { margin: 0; font: 15px/1.5 system-ui, sans-serif; display: flex; flex-direction: column; height: 100vh; }
      header, footer { display: flex; gap: .5em; padding: .6em 1em; border-bottom: 1px solid var(--line); align-items: center; flex-wrap: wrap; }
      footer { border-top: 1px solid var(--line); border-bottom: 0; }
      header h1 { font-size: 1.1em; margin: 0 1em 0 0; }
      #messages { flex: 1; overflow-y: auto; padding: 1em; display: flex; flex-direction: column; gap: .8em; }
      .message { white-space: pre-wrap; padding: .6em .9em; border-radius: .6em; max-width: 48em; border: 1px solid var(--line); }
      .message.user { align-self: flex-end; background: var(--me); }
      .message.error { border-color: #dc2626; color: #dc2626; }
      #prompt { flex: 1; min-height: 2.6em; resize: vertical; font: inherit; padding: .4em; }
      #status { font-size: .85em; opacity: .7; }
      input, select, button { font: inherit; }
    </style>
    </head>
    <body>
    <header>
      <h1>Apus</h1>
      <label>Model <select id="model"></select></label>
      <label>API key <input id="key" type="password" size="14" placeholder="if the server needs one"></label>
      <label>Temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7" style="width: 4.5em"></label>
      <label>Max tokens <input id="max-tokens" type="number" min="1" value="512" style="width: 5.5em"></label>
      <button id="new-chat" type="button">New chat</button>
    </header>
    <div id="messages" aria-live="polite"></div>
    <footer>
      <textarea id="prompt" placeholder="Message (Enter sends, Shift+Enter breaks the line)"></textarea>
      <button id="send" type="button">Send</button>
      <button id="stop" type="button" disabled>Stop</button>
      <span id="status"></span>
    </footer>
    <script>
    "use strict";
    const $ = (id) => document.getElementById(id);
    const history = [];
    let controller = null;
    $("key").value = localStorage.getItem("apus-key") || "";
    $("key").addEventListener("change", () => { localStorage.setItem("apus-key", $("key").value); loadModels(); });

    function headers() {
      const h = { "Content-Type": "application/json" };
      if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
      return h;
    }

    function bubble(role, text) {
      const div = document.createElement("div");
      div.className = "message " + role;
      div.textContent = text;
      $("messages").appendChild(div);
      div.scrollIntoView({ block: "end" });
      return div;
    }

    async function errorText(response) {
      try { return (await response.json()).error.message; } catch { return response.status + " " + response.statusText; }
    }

    async function loadModels() {
      try {
        const response = await fetch("/v1/models", { headers: headers() });
        if (!response.ok) { $("status").textContent = await errorText(response); return; }
        const models = (await response.json()).data;
        $("model").replaceChildren(...models.map((m) => new Option(m.id, m.id)));
        $("status").textContent = "";
      } catch (e) { $("status").textContent = String(e); }
    }

    async function send() {
      const text = $("prompt").value.trim();
      if (!text || controller) return;
      $("prompt").value = "";
      history.push({ role: "user", content: text });
      bubble("user", text);
      const reply = bubble("assistant", "");
      controller = new AbortController();
      $("send").disabled = true;
      $("stop").disabled = false;
      $("status").textContent = "…";
      let content = "";
      try {
        const response = await fetch("/v1/chat/completions", {
          method: "POST", headers: headers(), signal: controller.signal,
          body: JSON.stringify({ model: $("model").value, messages: history, stream: true, stream_options: { include_usage: true },
                                 temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value) }),
        });
        if (!response.ok) throw new Error(await errorText(response));
        const reader = response.body.getReader(), decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const event = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
            const chunk = JSON.parse(event.slice(6));
            if (chunk.error) throw new Error(chunk.error.message);
            for (const choice of chunk.choices) content += choice.delta.content || "";
            reply.textContent = content;
            reply.scrollIntoView({ block: "end" });
            if (chunk.timings) {
              $("status").textContent = chunk.timings.predicted_n + " tokens, " + chunk.timings.predicted_per_second.toFixed(1) + " tokens/s";
            }
          }
        }
        history.push({ role: "assistant", content });
      } catch (e) {
        if (e.name === "AbortError") {
          history.push({ role: "assistant", content });
          $("status").textContent = "stopped";
        } else {
          history.pop();
          reply.remove();
          bubble("error", String(e.message || e));
          $("status").textContent = "";
        }
      } finally {
        controller = null;
        $("send").disabled = false;
        $("stop").disabled = true;
      }
    }

    $("send").addEventListener("click", send);
    $("stop").addEventListener("click", () => controller && controller.abort());
    $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); } });
    $("new-chat").addEventListener("click", () => { if (controller) controller.abort(); history.length = 0; $("messages").replaceChildren(); });
    loadModels();
    </script>
    </body>
    </html>
    """#
}
