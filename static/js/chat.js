// The chat: sends a question, shows the answer as it streams in, stops it on request, answers
// again, edits a question, copies answers and code, and opens the conversation list on a phone.
// Streamed text is shown with textContent only; the finished answer's HTML comes from the
// server's Markdown renderer, which lets no script or event handler through.
(() => {
  "use strict";
  const chat = document.getElementById("chat");
  if (!chat) return;
  const form = document.getElementById("ask");
  const transcript = document.getElementById("transcript");
  const scroller = document.getElementById("chat-scroll");
  const isPrivate = chat.dataset.private === "true";
  const privateHistory = [];  // a private chat lives only in this page
  let conversation = chat.dataset.conversation ? Number(chat.dataset.conversation) : null;
  let running = null;

  // ---- copying (ui.js copies, also on a node reached over plain http)

  function copyButton(label, text) {
    const button = Object.assign(document.createElement("button"), { type: "button", className: "copy", textContent: label });
    button.addEventListener("click", () => window.sovereignUi.copyWithFeedback(button, text()));
    return button;
  }

  function sourceOf(answer) {
    const source = answer.querySelector("template.source");
    return source ? source.content.textContent : answer.querySelector(".markdown").innerText;
  }

  // Each code block gets its language's name and a copy button of its own.
  function decorateCode(markdown) {
    for (const pre of markdown.querySelectorAll("pre")) {
      const code = pre.querySelector("code");
      if (!code || pre.parentElement.classList.contains("code-block")) continue;
      const block = Object.assign(document.createElement("div"), { className: "code-block" });
      const bar = Object.assign(document.createElement("div"), { className: "code-bar" });
      const language = [...code.classList].find((name) => name.startsWith("language-"));
      bar.append(Object.assign(document.createElement("span"), { textContent: language ? language.slice(9) : "code" }));
      bar.append(copyButton("Copy code", () => code.innerText));
      pre.tabIndex = 0;  // a block wider than the screen scrolls: keyboards must reach it
      pre.replaceWith(block);
      block.append(bar, pre);
    }
  }

  function decorateAnswer(answer) {
    const markdown = answer.querySelector(".markdown");
    if (markdown) decorateCode(markdown);
    const old = answer.querySelector(".actions .copy");
    if (old) old.replaceWith(copyButton("Copy", () => sourceOf(answer)));
  }

  // ---- the transcript

  function scrollToEnd() { scroller.scrollTop = scroller.scrollHeight; }

  function item(kind) {
    const entry = document.createElement("li");
    entry.className = kind;
    transcript.append(entry);
    return entry;
  }

  function questionItem(text) {
    const entry = item("question");
    entry.append(Object.assign(document.createElement("div"), { className: "bubble", textContent: text }));
    const actions = Object.assign(document.createElement("div"), { className: "actions" });
    actions.append(Object.assign(document.createElement("button"), { type: "button", className: "edit", textContent: "Edit" }));
    entry.append(actions);
    return entry;
  }

  function actionsOf(answer) {
    const actions = Object.assign(document.createElement("div"), { className: "actions" });
    actions.append(
      copyButton("Copy", () => sourceOf(answer)),
      Object.assign(document.createElement("button"), { type: "button", className: "regenerate", textContent: "Regenerate" }),
    );
    return actions;
  }

  function provenanceOf(provenance, finishReason) {
    const details = Object.assign(document.createElement("details"), { className: "provenance" });
    const notes = { length: " · cut at max_tokens", cancelled: " · stopped" }[finishReason] || "";
    details.append(Object.assign(document.createElement("summary"), { textContent: provenance.model + notes }));
    const line = document.createElement("p");
    const model = Object.assign(document.createElement("span"), { title: `sha256 ${provenance.model_sha256}` });
    model.textContent = `${provenance.model} · sha256 ${provenance.model_sha256.slice(0, 12)}…`;
    const s = provenance.sampling;
    line.append(model, ` · temperature ${s.temperature} · top_p ${s.top_p} · seed ${s.seed} · max_tokens ${s.max_tokens}`);
    details.append(line);
    return details;
  }

  function note(answer, text) {
    answer.append(Object.assign(document.createElement("p"), { className: "provenance", textContent: text }));
  }

  function listed(id) {
    return document.querySelector(`#conversations a[data-conversation="${id}"]`);
  }

  function conversationStarted(event) {
    if (conversation === event.conversation) return;
    conversation = event.conversation;
    chat.dataset.conversation = String(conversation);
    history.replaceState(null, "", `${chat.dataset.base}${conversation}/`);
    const link = Object.assign(document.createElement("a"), { href: `${chat.dataset.base}${conversation}/`, textContent: event.title });
    link.dataset.conversation = String(conversation);
    link.setAttribute("aria-current", "page");
    const entry = document.createElement("li");
    entry.append(link);
    const list = document.getElementById("conversations");
    list.querySelectorAll(".empty").forEach((empty) => empty.remove());
    list.prepend(entry);
    titled(event.title);
  }

  function titled(title) {
    if (!title) return;
    document.getElementById("chat-title").textContent = title;
    document.title = `${title} · Sovereign`;
    const link = listed(conversation);
    if (link) link.textContent = title;
  }

  function show(answer, event, text, questionEntry) {
    if (event.event === "start") {
      conversationStarted(event);
      if (event.question) questionEntry.dataset.message = String(event.question);
    } else if (event.event === "token") {
      if (!text.firstChild) text.append(document.createTextNode(""));
      text.firstChild.appendData(event.text);  // not the whole text again at every token
    } else if (event.event === "done") {
      const rendered = Object.assign(document.createElement("div"), { className: "markdown" });
      rendered.innerHTML = event.html;  // sanitised by the server (apps/inference/markdown.py)
      text.replaceWith(rendered);
      answer.dataset.finish = event.finish_reason;
      if (event.answer) answer.dataset.message = String(event.answer);
      if (event.context_note) {
        answer.prepend(Object.assign(document.createElement("p"), { className: "context-note", textContent: event.context_note }));
      }
      decorateCode(rendered);
      answer.append(actionsOf(answer), provenanceOf(event.provenance, event.finish_reason));
    } else if (event.event === "title") {
      titled(event.title);
    } else if (event.event === "error") {
      answer.dataset.finish = "error";
      note(answer, event.message);
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
    document.getElementById("send").hidden = Boolean(controller);
    document.getElementById("stop").hidden = !controller;
    chat.dataset.running = controller ? "true" : "false";
  }

  // The server saved what it sent before it noticed Stop, which may be more than had arrived
  // here: it is told what was shown, and keeps only that (409 while it has not saved yet).
  async function keepShown(conversationId, shown) {
    for (let attempt = 0; attempt < 40; attempt += 1) {
      const response = await post(chat.dataset.stopped, { conversation: conversationId, shown }).catch(() => null);
      if (!response || response.status !== 409) return;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  function post(url, body, signal) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": form.csrfmiddlewaretoken.value },
      body: JSON.stringify(body),
      signal,
    });
  }

  function chatSettings() {
    return {
      system_prompt: form.system_prompt.value,
      temperature: form.temperature.value,
      top_p: form.top_p.value,
      max_tokens: form.max_tokens.value,
    };
  }

  // `how` for a question asked again or edited: `reuse`, the question's entry kept (answered
  // again); `replaced`, the entries taken out for this turn; `regenerate` or `edit`, the id of
  // the stored question; `at`, where the question goes in a private chat's history. Until the
  // node has taken the question nothing has changed there, so a refusal, or Stop before then,
  // puts the taken-out entries back.
  async function ask(question, how = {}) {
    const errorOutput = document.getElementById("ask-error");
    errorOutput.textContent = "";
    const welcome = document.getElementById("welcome");
    if (welcome) welcome.remove();
    const at = how.at ?? privateHistory.length;
    const body = { model: form.model.value, question, conversation, private: isPrivate, settings: chatSettings() };
    const price = form.model.selectedOptions[0]?.dataset.priceMsat;
    if (price !== undefined) body.price_msat = Number(price); // the price shown: never more
    if (how.regenerate) body.regenerate = how.regenerate;
    if (how.edit) body.edit = how.edit;
    if (isPrivate) body.history = privateHistory.slice(0, at);
    const questionEntry = how.reuse || questionItem(question);
    const answer = item("answer");
    const text = Object.assign(document.createElement("div"), { className: "streaming" });
    answer.append(text);
    scrollToEnd();
    let said = "";  // the answer's own text (Markdown), for copying and a private chat's history
    let taken = false;  // the node took the question (a stored chat: and stored it)
    const controller = new AbortController();
    setRunning(controller);
    try {
      const response = await post(chat.dataset.ask, body, controller.signal);
      if (!response.ok) {
        const refusal = await response.json().catch(() => ({ error: `The node answered ${response.status}.` }));
        throw new Error(refusal.error);
      }
      taken = true;  // the server answers only once the engine has taken the question
      await readLines(response, (event) => {
        if (event.event === "token") said += event.text;
        if (event.event === "done") answer.append(sourceTemplate(said));
        show(answer, event, text, questionEntry);
        if (event.event === "token" || event.event === "done") scrollToEnd();
        // In a stored conversation the node may go on to name it and to write a note of what
        // no longer fits the model's context: the next question need not wait for either.
        if (event.event === "done" && !isPrivate) setRunning(null);
      });
    } catch (error) {
      if (!taken) {
        putBack(how.reuse ? null : questionEntry, answer, how.replaced || []);
        if (!how.reuse) form.question.value = question;
        if (error.name !== "AbortError") errorOutput.textContent = error.message;
        return;
      }
      if (error.name === "AbortError") {
        if (!isPrivate && conversation !== null) keepShown(conversation, said);
        answer.dataset.finish = "cancelled";
        answer.append(sourceTemplate(said), actionsOf(answer));
        note(answer, "stopped");
      } else {
        show(answer, { event: "error", message: "The connection to the node was lost." }, text, questionEntry);
      }
    } finally {
      if (running === controller) setRunning(null);  // not a question asked meanwhile
    }
    if (isPrivate) {
      questionEntry.dataset.index = String(at);
      privateHistory.splice(at, Infinity, { role: "user", content: question }, { role: "assistant", content: said });
    }
  }

  function putBack(questionEntry, answer, replaced) {
    if (questionEntry) questionEntry.remove();
    answer.remove();
    transcript.append(...replaced);
  }

  function sourceTemplate(text) {
    const template = Object.assign(document.createElement("template"), { className: "source" });
    template.content.append(document.createTextNode(text));
    return template;
  }

  function takeOutFrom(entry) {
    const taken = [];
    for (let node = entry; node; ) {
      const next = node.nextElementSibling;
      node.remove();
      taken.push(node);
      node = next;
    }
    return taken;
  }

  // What the node knows the question by: its id in a stored chat, its place in a private one.
  function place(question) {
    const known = isPrivate ? question.dataset.index : question.dataset.message;
    return known === undefined ? null : Number(known);
  }

  function regenerate(answer) {
    if (running || answer !== transcript.lastElementChild) return;
    const question = answer.previousElementSibling;
    if (place(question) === null) return window.location.reload();  // the page is behind
    answer.remove();
    const how = { reuse: question, replaced: [answer] };
    if (isPrivate) how.at = place(question);
    else how.regenerate = place(question);
    return ask(question.querySelector(".bubble").textContent, how);
  }

  function edit(question) {
    if (running || question.querySelector("form")) return;
    const bubble = question.querySelector(".bubble");
    const editor = Object.assign(document.createElement("form"), { className: "edit-form" });
    const area = Object.assign(document.createElement("textarea"), { value: bubble.textContent, rows: 3 });
    area.setAttribute("aria-label", "Edited question");
    const send = Object.assign(document.createElement("button"), { type: "submit", className: "primary", textContent: "Send" });
    const cancel = Object.assign(document.createElement("button"), { type: "button", textContent: "Cancel" });
    editor.append(area, send, cancel);
    bubble.hidden = true;
    question.append(editor);
    area.focus();
    const close = () => { editor.remove(); bubble.hidden = false; };
    cancel.addEventListener("click", close);
    area.addEventListener("keydown", (event) => {
      if (event.isComposing) return;
      if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); editor.requestSubmit(); }
      if (event.key === "Escape") { event.preventDefault(); close(); question.querySelector(".edit").focus(); }
    });
    editor.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = area.value;
      if (!text.trim() || running) return;
      if (place(question) === null) return window.location.reload();  // the page is behind
      close();
      const how = { replaced: takeOutFrom(question) };
      if (isPrivate) how.at = place(question);
      else how.edit = place(question);
      ask(text, how);
    });
  }

  // ---- the conversation list as a drawer on a phone

  const opener = document.querySelector("button.drawer-open");
  const drawerShown = () => document.body.classList.contains("drawer-shown");

  function drawer(open) {
    document.body.classList.toggle("drawer-shown", open);
    document.getElementById("drawer-backdrop").hidden = !open;
    opener.setAttribute("aria-expanded", String(open));
    chat.inert = open;  // the thread behind the drawer takes no focus while it is open
    if (open) document.getElementById("chat-search").focus();
    else opener.focus();
  }

  opener.addEventListener("click", () => drawer(true));
  document.querySelector(".drawer-close").addEventListener("click", () => drawer(false));
  document.getElementById("drawer-backdrop").addEventListener("click", () => drawer(false));
  window.matchMedia("(min-width: 50.01rem)").addEventListener("change", (wide) => {
    if (wide.matches && drawerShown()) drawer(false);  // a phone turned sideways
  });
  const menu = document.querySelector(".chat-menu");
  document.addEventListener("click", (event) => {  // the ⋯ menu closes as menus do
    if (menu && menu.open && !menu.contains(event.target)) menu.open = false;
  });
  // Esc closes what is open, innermost first; only then does it stop an answer.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented || event.isComposing) return;
    if (drawerShown()) return drawer(false);
    if (menu && menu.open) { menu.open = false; menu.querySelector("summary").focus(); return; }
    if (event.target instanceof Element && event.target.closest("dialog, details[open]:not(.chat-settings)")) return;
    if (running) running.abort();
  });

  transcript.querySelectorAll(".answer").forEach(decorateAnswer);
  if (!form) return;

  transcript.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.classList.contains("regenerate")) regenerate(button.closest(".answer"));
    else if (button.classList.contains("edit")) edit(button.closest(".question"));
  });
  for (const example of document.querySelectorAll(".examples .example")) {
    example.addEventListener("click", () => { if (!running) ask(example.textContent); });
  }

  const question = form.question;
  const grow = () => { question.style.height = "auto"; question.style.height = `${Math.min(question.scrollHeight, 240)}px`; };
  question.addEventListener("input", grow);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = question.value;
    if (!text.trim() || running) return;
    question.value = "";
    grow();
    ask(text);
  });
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  document.getElementById("stop").addEventListener("click", () => running && running.abort());
  scrollToEnd();
  if (window.matchMedia("(min-width: 50rem)").matches) question.focus();
})();
