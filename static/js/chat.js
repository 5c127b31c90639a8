// The chat: sends a question, shows the answer as it streams in, and stops it on request.
// Streamed text is shown with textContent only; the finished answer's HTML comes from the
// server's Markdown renderer, which lets no script or event handler through.
(() => {
  "use strict";
  const chat = document.getElementById("chat");
  const form = document.getElementById("ask");
  if (!chat || !form) return;
  const transcript = document.getElementById("transcript");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const errorOutput = document.getElementById("ask-error");
  const isPrivate = chat.dataset.private === "true";
  const privateHistory = [];  // a private chat lives only in this page
  let conversation = chat.dataset.conversation ? Number(chat.dataset.conversation) : null;
  let running = null;

  function bubble(kind, text) {
    const item = document.createElement("li");
    item.className = kind;
    item.textContent = text;
    transcript.append(item);
    item.scrollIntoView({ block: "end" });
    return item;
  }

  function provenanceLine(provenance, finishReason) {
    const line = document.createElement("p");
    line.className = "provenance";
    const model = document.createElement("span");
    model.title = `sha256 ${provenance.model_sha256}`;
    model.textContent = `${provenance.model} · sha256 ${provenance.model_sha256.slice(0, 12)}…`;
    const s = provenance.sampling;
    const notes = { length: " · cut at max_tokens" }[finishReason] || "";
    line.append(model, ` · temperature ${s.temperature} · top_p ${s.top_p} · seed ${s.seed} · max_tokens ${s.max_tokens}${notes}`);
    return line;
  }

  function conversationStarted(event) {
    if (conversation === event.conversation) return;
    conversation = event.conversation;
    chat.dataset.conversation = String(conversation);
    history.replaceState(null, "", `${chat.dataset.base}${conversation}/`);
    const link = document.createElement("a");
    link.href = `${chat.dataset.base}${conversation}/`;
    link.textContent = event.title;
    link.setAttribute("aria-current", "page");
    const item = document.createElement("li");
    item.append(link);
    document.getElementById("conversations").prepend(item);
  }

  function show(answer, event, text) {
    if (event.event === "start") conversationStarted(event);
    else if (event.event === "token") {
      text.textContent += event.text;
    } else if (event.event === "done") {
      const rendered = document.createElement("div");
      rendered.className = "markdown";
      rendered.innerHTML = event.html;  // sanitised by the server (apps/inference/markdown.py)
      text.replaceWith(rendered);
      answer.dataset.finish = event.finish_reason;
      if (event.context_note) {
        const note = document.createElement("p");
        note.className = "context-note";
        note.textContent = event.context_note;
        answer.prepend(note);
      }
      answer.append(provenanceLine(event.provenance, event.finish_reason));
    } else if (event.event === "error") {
      answer.dataset.finish = "error";
      const note = document.createElement("p");
      note.className = "provenance";
      note.textContent = event.message;
      answer.append(note);
    }
  }

  async function readLines(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        onEvent(JSON.parse(buffered.slice(0, newline)));
        buffered = buffered.slice(newline + 1);
      }
    }
  }

  function setRunning(controller) {
    running = controller;
    sendButton.hidden = Boolean(controller);
    stopButton.hidden = !controller;
  }

  // The server saved what it sent before it noticed Stop, which may be more than had arrived
  // here: it is told what was shown, and keeps only that (409 while it has not saved yet).
  async function keepShown(conversationId, shown) {
    for (let attempt = 0; attempt < 40; attempt += 1) {
      const response = await fetch(chat.dataset.stopped, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": form.csrfmiddlewaretoken.value },
        body: JSON.stringify({ conversation: conversationId, shown }),
      }).catch(() => null);
      if (!response || response.status !== 409) return;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  async function ask(question) {
    errorOutput.textContent = "";
    const body = { model: form.model.value, question, conversation, private: isPrivate };
    if (isPrivate) body.history = privateHistory;
    const questionItem = bubble("question", question);
    const answer = bubble("answer", "");
    const text = document.createElement("div");
    text.className = "streaming";
    answer.append(text);
    let said = "";  // the answer's own text (Markdown), for a private chat's history
    const controller = new AbortController();
    setRunning(controller);
    try {
      const response = await fetch(chat.dataset.ask, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": form.csrfmiddlewaretoken.value },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        const refusal = await response.json().catch(() => ({ error: `The node answered ${response.status}.` }));
        throw new Error(refusal.error);
      }
      await readLines(response, (event) => {
        if (event.event === "token") said += event.text;
        show(answer, event, text);
        // In a stored conversation the node may go on to write a note of what no longer fits
        // the model's context: the next question need not wait for it. (A private chat's
        // history is taken once its stream ends, which is at once: it gets no note.)
        if (event.event === "done" && !isPrivate) setRunning(null);
      });
    } catch (error) {
      if (error.name === "AbortError") {
        if (!isPrivate && conversation !== null) keepShown(conversation, said);
        answer.dataset.finish = "cancelled";
        answer.append(Object.assign(document.createElement("p"), { className: "provenance", textContent: "stopped" }));
      } else if (answer.textContent === "") {  // refused before any answer: nothing was kept
        questionItem.remove();
        answer.remove();
        form.question.value = question;
        errorOutput.textContent = error.message;
      } else {
        show(answer, { event: "error", message: "The connection to the node was lost." }, text);
      }
    } finally {
      if (running === controller) setRunning(null);  // not a question asked meanwhile
    }
    if (isPrivate && answer.isConnected) {
      privateHistory.push({ role: "user", content: question }, { role: "assistant", content: said });
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = form.question.value;
    if (!question.trim() || running) return;
    form.question.value = "";
    ask(question);
  });
  form.question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stopButton.addEventListener("click", () => running && running.abort());
})();
