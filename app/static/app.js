// The chat page: POST the question, read the Server-Sent Events from the response body as they arrive.
// (EventSource can only GET, so fetch() + a ReadableStream reader parse the SSE frames by hand.)
"use strict";

const $ = (id) => document.getElementById(id);
window.chatEvents = [];  // every event with its arrival time: the browser test reads it

function newChatId() {
  return crypto.randomUUID ? crypto.randomUUID().replaceAll("-", "").slice(0, 12)
                           : Math.random().toString(16).slice(2, 14);
}

let chatId = localStorage.getItem("chatId") || newChatId();
localStorage.setItem("chatId", chatId);

// Lesson 18: with WORKSHOP_API_KEYS=1 the service wants `Authorization: Bearer <key>`. The page asks for the key
// once (on a 401 or 403), keeps it in localStorage and sends it with every request.
function authHeaders() {
  const key = localStorage.getItem("apiKey");
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function fetchWithKey(url, options = {}) {
  let response = await fetch(url, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
  if (response.status === 401 || response.status === 403) {
    const key = window.prompt("This service needs an API key (python -m app.keys add NAME makes one):");
    if (key) {
      localStorage.setItem("apiKey", key.trim());
      response = await fetch(url, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
    }
  }
  return response;
}

function addMessage(role, text, extra = "") {
  $("empty")?.remove();
  const div = document.createElement("div");
  div.className = `msg ${role} ${extra}`.trim();
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(who, body);
  $("conversation").append(div);
  div.scrollIntoView({ block: "end" });
  return body;
}

function showSources(list) {
  const ol = $("sources");
  ol.replaceChildren();
  for (const s of list) {
    const li = document.createElement("li");
    li.className = s.cited ? "cited" : "";
    li.dataset.chunkId = s.chunk_id;
    li.innerHTML = `[${s.n}] <span class="title"></span>${s.cited ? '<span class="badge">cited</span>' : ""}
      <small> score ${s.score.toFixed(3)} · <code></code></small><span class="snippet"></span>`;
    li.querySelector(".title").textContent = s.title;
    li.querySelector("code").textContent = s.chunk_id;
    li.querySelector(".snippet").textContent = s.text.slice(0, 180).replace(/\s+/g, " ") + "…";
    ol.append(li);
  }
}

async function loadChat() {
  $("chat-id").textContent = chatId;
  const response = await fetchWithKey(`chats/${chatId}`);
  if (!response.ok) return;
  const chat = await response.json();
  for (const m of chat.messages) addMessage(m.role, m.content);
  $("status").textContent = chat.messages.length ? `${chat.messages.length / 2} earlier turns loaded` : "new chat";
}

// Parse "event: x\ndata: {...}\n\n" frames out of the growing text buffer.
function* frames(buffer) {
  let end;
  while ((end = buffer.text.indexOf("\n\n")) >= 0) {
    const frame = buffer.text.slice(0, end);
    buffer.text = buffer.text.slice(end + 2);
    let event = "message", data = "";
    for (const line of frame.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data += line.slice(5).trim();
    }
    yield { event, data: data ? JSON.parse(data) : {} };
  }
}

async function ask(question) {
  addMessage("user", question);
  const answer = addMessage("assistant", "", "streaming");
  $("send").disabled = true;
  $("status").textContent = "waiting for the first token…";
  const started = performance.now();
  try {
    const response = await fetchWithKey(`chat/${chatId}`, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" }, body: JSON.stringify({ question }),
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error(`${response.status}: ${problem.detail || response.statusText}`);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const buffer = { text: "" };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer.text += value;
      for (const { event, data } of frames(buffer)) {
        if (event === "token") {
          answer.textContent += data.text;
          $("status").textContent = "streaming…";
        } else if (event === "sources") {
          showSources(data.sources);
          if (data.answer) answer.textContent = data.answer;  // cleaned: an echoed "Question: ..." tail cut
        } else if (event === "guard") {  // lesson 15: a refusal, or the answer with links or codes stripped
          answer.textContent = data.text;
        } else if (event === "budget") {  // lesson 18: past 80 % of this key's token budget
          addMessage("assistant", `Note: ${Math.round(data.fraction * 100)} % of your token budget is used.`, "note");
        } else if (event === "done" && data.blocked) {
          $("status").textContent = "refused by the guardrails: nothing was sent to the model";
        } else if (event === "done") {
          $("status").textContent = `${data.completion_tokens} tokens, first after ${data.ttft_s.toFixed(2)} s, ` +
            `${(data.tokens_per_s || 0).toFixed(1)} tokens/s, ${data.total_s.toFixed(1)} s in all`;
        } else if (event === "error") {
          throw new Error(data.message);
        }
        window.chatEvents.push({ event, t: performance.now() - started, shown: answer.textContent.length });
      }
    }
  } catch (err) {
    answer.parentElement.classList.add("failed");
    answer.textContent = answer.textContent || "(no answer)";
    $("status").textContent = String(err.message || err);
    $("status").className = "error";
  } finally {
    answer.parentElement.classList.remove("streaming");
    $("send").disabled = false;
  }
}

$("ask").addEventListener("submit", (e) => {
  e.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("question").value = "";
  $("status").className = "hint";
  ask(question);
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
});
$("new-chat").addEventListener("click", () => {
  chatId = newChatId();
  localStorage.setItem("chatId", chatId);
  $("conversation").innerHTML = '<p id="empty" class="hint">A new chat: ask a question.</p>';
  $("sources").replaceChildren();
  $("chat-id").textContent = chatId;
  $("status").textContent = "new chat";
});
loadChat();
