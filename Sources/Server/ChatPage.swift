/// The chat page `GET /` serves, as llama-server serves one: one self-contained HTML file
/// (no external scripts, styles or fonts) that streams `/v1/chat/completions` for the
/// model picked from `/v1/models`. Replies are rendered as a small Markdown subset (code
/// fences, inline code, bold, headings, lists, paragraphs) built node by node from
/// `textContent`, never parsed as HTML, so a model cannot inject markup. An API key, when the server needs one, is typed into
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
      .message { padding: .6em .9em; border-radius: .6em; max-width: 48em; border: 1px solid var(--line); }
      .message.user, .message.error { white-space: pre-wrap; }
      .message p, .message ul, .message h1, .message h2, .message h3 { margin: .3em 0; }
      .message pre { background: #8882; padding: .6em; border-radius: .4em; overflow-x: auto; margin: .4em 0; }
      .message code { font-family: ui-monospace, monospace; font-size: .92em; }
      .message :not(pre) > code { background: #8882; padding: 0 .25em; border-radius: .25em; }
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

    // A Markdown subset, as DOM nodes whose text is set as text: fences (an unclosed one,
    // mid-stream, runs to the end), then per block headings, "-"/"*"/"1." lists and
    // paragraphs, with `code` and **bold** inline.
    function inline(parent, text) {
      for (const part of text.split(/(`[^`\n]+`|\*\*[^*\n]+\*\*)/)) {
        if (!part) continue;
        let node;
        if (part.startsWith("`") && part.endsWith("`") && part.length > 1) { node = document.createElement("code"); node.textContent = part.slice(1, -1); }
        else if (part.startsWith("**") && part.endsWith("**") && part.length > 4) { node = document.createElement("strong"); node.textContent = part.slice(2, -2); }
        else node = document.createTextNode(part);
        parent.appendChild(node);
      }
    }

    function markdown(element, text) {
      element.replaceChildren();
      element.dataset.text = text;
      const pieces = text.split(/^```/m);
      pieces.forEach((piece, i) => {
        if (i % 2 === 1) {
          const pre = document.createElement("pre"), code = document.createElement("code");
          const newline = piece.indexOf("\n");
          const language = newline < 0 ? piece : piece.slice(0, newline);
          if (/^[\w+-]+$/.test(language.trim())) code.dataset.language = language.trim();
          code.textContent = newline < 0 ? "" : piece.slice(newline + 1).replace(/\n$/, "");
          pre.appendChild(code);
          element.appendChild(pre);
          return;
        }
        if (i > 0) piece = piece.replace(/^[^\n]*\n?/, "");
        for (const block of piece.split(/\n\s*\n/)) {
          const lines = block.split("\n").filter((l) => l.trim());
          if (!lines.length) continue;
          const heading = lines[0].match(/^(#{1,3})\s+(.*)$/);
          if (heading && lines.length === 1) {
            const h = document.createElement("h" + heading[1].length);
            inline(h, heading[2]);
            element.appendChild(h);
          } else if (lines.every((l) => /^\s*([-*]|\d+\.)\s+/.test(l))) {
            const list = document.createElement(/^\s*\d/.test(lines[0]) ? "ol" : "ul");
            for (const l of lines) {
              const li = document.createElement("li");
              inline(li, l.replace(/^\s*([-*]|\d+\.)\s+/, ""));
              list.appendChild(li);
            }
            element.appendChild(list);
          } else {
            const p = document.createElement("p");
            lines.forEach((l, k) => { if (k) p.appendChild(document.createElement("br")); inline(p, l); });
            element.appendChild(p);
          }
        }
      });
    }

    function bubble(role, text) {
      const div = document.createElement("div");
      div.className = "message " + role;
      if (role === "assistant") markdown(div, text); else div.textContent = text;
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
            markdown(reply, content);
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
