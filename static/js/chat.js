// The chat: sends a question, shows the answer as it streams in, stops it on request, answers
// again, edits a question, copies answers and code, and opens the conversation list on a phone.
// Outside models: the picker shows each one's price, the line under the composer says what
// leaves the node, the price shown is sent with the question (the node refuses an answer that
// would cost more), and "Ask <model>" answers the last question again with an outside model.
// The cross-check of the last question is chat_crosscheck.js; what a question to an outside
// model would send, shown before it is sent, is chat_preview.js.
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
    const actions = answer.querySelector(".actions");
    if (actions) actions.append(...laterActions(answer));
  }

  // ---- models and their prices

  // An amount in msat as the node's pages show it (the wallet's `sats` filter).
  function sats(msat) {
    const whole = Math.floor(msat / 1000).toLocaleString("en-US");
    const rest = msat % 1000;
    return rest ? `${whole}.${String(rest).padStart(3, "0")} sat` : `${whole} sat`;
  }

  const priceLine = (msat) => (msat ? `up to ${sats(msat)}` : "free");
  const modelSelect = () => form && form.model;
  const strongerSelect = () => form && form.stronger;

  // The picker's option for a model: what the page knows of it (outside: provider, price).
  function modelOption(name) {
    const select = modelSelect();
    return select ? [...select.options].find((option) => option.value === name) || null : null;
  }

  // Priced: an outside model or a route (whose price is its dearest model's); the price shown
  // is sent with the question. A provider's model names who answers.
  const isPriced = (option) => Boolean(option && option.dataset.priceMsat !== undefined);
  const isProvider = (option) => Boolean(option && option.dataset.provider !== undefined);
  const outsideOptions = () => (modelSelect() ? [...modelSelect().options].filter(isProvider) : []);

  function strongerModel() {
    const select = strongerSelect();
    return select && select.value ? modelOption(select.value) : outsideOptions()[0] || null;
  }

  function strongerLabel(option) {
    return `Ask ${option.value} (${priceLine(Number(option.dataset.priceMsat))})`;
  }

  // The buttons only the last answer shows (chat.css): another model on the same question.
  function laterActions(answer) {
    const buttons = [];
    const stronger = strongerModel();
    if (stronger && !answer.dataset.provider) {  // a local answer: one click asks outside
      buttons.push(Object.assign(document.createElement("button"), { type: "button", className: "stronger", textContent: strongerLabel(stronger) }));
    }
    if (modelSelect() && modelSelect().options.length >= 2) {
      buttons.push(Object.assign(document.createElement("button"), { type: "button", className: "crosscheck-open", textContent: "Cross-check" }));
    }
    return buttons;
  }

  // What leaves the node with the chosen model, said before anything is sent.
  function showEgress() {
    const option = modelSelect().selectedOptions[0];
    const line = document.getElementById("egress-note");
    const leaves = isProvider(option) || (option && option.dataset.leaves === "true");
    line.hidden = !leaves;
    form.question.placeholder = isPriced(option) ? `Ask ${option.value}…` : "Ask the local model…";
    if (!leaves) return;
    const price = Number(option.dataset.priceMsat);
    const paid = price ? `Up to ${sats(price)} a question, from your allowance.` : "No charge.";
    const where = isProvider(option)
      ? `go to ${option.dataset.provider}.`
      : { fallback: "go to the first of this route's models that answers, in the household's order.",
          spread: "go to the model this route gives the conversation: each new one goes elsewhere." }[option.dataset.route];
    line.replaceChildren(
      Object.assign(document.createElement("strong"), { textContent: "Leaves this node: " }),
      `your question and the conversation so far ${where} ${paid}`,
    );
  }

  function relabelStronger() {
    const option = strongerModel();
    if (option) transcript.querySelectorAll(".actions .stronger").forEach((button) => { button.textContent = strongerLabel(option); });
  }

  function relabel(option, price) {
    option.dataset.priceMsat = String(price);
    option.textContent = `${option.value} · ${priceLine(price)}`;
  }

  // Prices follow the longest answer the chat asks for, and a provider may change its own:
  // asked again when either may have changed, so what is shown is what is sent.
  async function refreshPrices() {
    if (!form) return;
    const query = new URLSearchParams({ max_tokens: form.max_tokens.value.trim() });
    const response = await fetch(`${chat.dataset.models}?${query}`).catch(() => null);
    if (!response || !response.ok) return;
    const { models } = await response.json();
    for (const model of models.filter((m) => m.outside)) {
      const shown = [modelOption(model.name), strongerSelect() && [...strongerSelect().options].find((o) => o.value === model.name)];
      for (const option of shown) if (option) relabel(option, model.price_msat);
    }
    showEgress();
    relabelStronger();
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
      ...laterActions(answer),
    );
    return actions;
  }

  // Who gave the answer: a local model's file (its sha256), or the provider outside, the
  // model and what it cost (with the payment's hash, whose proof the wallet keeps).
  function provenanceOf(provenance, finishReason) {
    const details = Object.assign(document.createElement("details"), { className: "provenance" });
    const notes = { length: " · cut at max_tokens", cancelled: " · stopped" }[finishReason] || "";
    const outside = Boolean(provenance.provider);
    const cost = outside && typeof provenance.cost_msat === "number" ? sats(provenance.cost_msat) : "";
    const who = outside ? [provenance.model, provenance.provider, cost].filter(Boolean).join(" · ") : provenance.model;
    details.append(Object.assign(document.createElement("summary"), { textContent: who + notes }));
    const line = document.createElement("p");
    if (outside) {
      line.append(`Answered outside this node by ${provenance.provider} · ${provenance.model}`);
      if (cost) line.append(` · cost ${cost}`);
      if (provenance.route) line.append(` · through ${provenance.route}`);
      if (provenance.payment_hash) {
        const payment = Object.assign(document.createElement("span"), { title: `payment hash ${provenance.payment_hash}` });
        payment.textContent = `payment ${provenance.payment_hash.slice(0, 12)}…`;
        line.append(" · ", payment);
      }
    } else {
      const model = Object.assign(document.createElement("span"), { title: `sha256 ${provenance.model_sha256}` });
      model.textContent = `${provenance.model} · sha256 ${String(provenance.model_sha256).slice(0, 12)}…`;
      line.append(model);
    }
    const s = provenance.sampling;
    if (s) line.append(` · temperature ${s.temperature} · top_p ${s.top_p} · seed ${s.seed} · max_tokens ${s.max_tokens}`);
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
      if (event.provenance.provider) answer.dataset.provider = event.provenance.provider;
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
    const at = how.at ?? privateHistory.length;
    const model = how.model || form.model.value;  // "Ask <model>": another model, this once
    const body = { model, question, conversation, private: isPrivate, settings: chatSettings() };
    const option = modelOption(model);
    if (isPriced(option)) body.price_msat = Number(option.dataset.priceMsat);  // the price shown: never more
    if (how.regenerate) body.regenerate = how.regenerate;
    if (how.edit) body.edit = how.edit;
    if (isPrivate) body.history = privateHistory.slice(0, at);
    if (model.includes("/") && !(await previewed(question, body, option, how))) return;  // local names have no slash
    const welcome = document.getElementById("welcome");
    if (welcome) welcome.remove();
    window.sovereignChat.crossCheck?.close();
    const questionEntry = how.reuse || questionItem(question);
    const answer = item("answer");
    if (isProvider(option)) answer.dataset.provider = option.dataset.provider;
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
        if (isPriced(option)) refreshPrices();  // a price that went up is shown as it is now
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

  // A question to an outside model: the member first sees what would leave the node
  // (chat_preview.js), and sends or cancels. Cancelled or refused, all is as it was before
  // Send: the question back where it was written, the entries taken out for it back in place.
  async function previewed(question, body, option, how) {
    const preview = window.sovereignChat.preview;
    const controller = new AbortController();
    setRunning(controller);  // Stop (or Esc) while the node works it out gives up asking
    let shown = null;
    try {
      shown = await preview.whatLeaves(body, controller.signal);
    } catch (error) {
      if (error.name !== "AbortError") document.getElementById("ask-error").textContent = error.message;
      if (isPriced(option)) refreshPrices();  // a price that went up is shown as it is now
    } finally {
      if (running === controller) setRunning(null);
    }
    const sent = shown !== null && (await preview.confirm(shown, body.model, option));
    if (!sent) unasked(question, how);
    else if (shown.digest) body.leaving = shown.digest;  // it leaves as shown, or not at all
    return sent;
  }

  function unasked(question, how) {
    const replaced = how.replaced || [];
    transcript.append(...replaced);
    if (how.edit) return edit(replaced[0], question);  // the edit open again, as it was written
    if (!how.reuse) {
      form.question.value = question;
      form.question.dispatchEvent(new Event("input"));  // the box grows to the text again
    }
    form.question.focus();
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

  function regenerate(answer, model) {
    if (running || answer !== transcript.lastElementChild) return;
    const question = answer.previousElementSibling;
    if (place(question) === null) return window.location.reload();  // the page is behind
    answer.remove();
    const how = { reuse: question, replaced: [answer], model };
    if (isPrivate) how.at = place(question);
    else how.regenerate = place(question);
    return ask(question.querySelector(".bubble").textContent, how);
  }

  function edit(question, text) {
    if (running || question.querySelector("form")) return;
    const bubble = question.querySelector(".bubble");
    const editor = Object.assign(document.createElement("form"), { className: "edit-form" });
    const area = Object.assign(document.createElement("textarea"), { value: text ?? bubble.textContent, rows: 3 });
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

  // What the cross-check (chat_crosscheck.js) and the preview (chat_preview.js) share.
  window.sovereignChat = {
    transcript, isPrivate, privateHistory, crossCheckUrl: chat.dataset.crosscheck, previewUrl: chat.dataset.preview,
    get conversation() { return conversation; },
    get running() { return running; },
    setRunning, post, place, chatSettings, decorateCode, refreshPrices,
    modelSelect, strongerModel, isPriced, isProvider, priceLine, sats,
  };

  transcript.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.classList.contains("regenerate")) regenerate(button.closest(".answer"));
    else if (button.classList.contains("stronger")) regenerate(button.closest(".answer"), strongerModel().value);
    else if (button.classList.contains("crosscheck-open")) window.sovereignChat.crossCheck?.open(button.closest(".answer"));
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
  modelSelect().addEventListener("change", showEgress);
  form.max_tokens.addEventListener("change", refreshPrices);
  const stronger = strongerSelect();
  if (stronger) {  // the member's pick, kept in this browser
    const kept = window.localStorage.getItem("chat.stronger");
    if (kept && [...stronger.options].some((option) => option.value === kept)) stronger.value = kept;
    relabelStronger();
    stronger.addEventListener("change", () => {
      window.localStorage.setItem("chat.stronger", stronger.value);
      relabelStronger();
    });
  }
  showEgress();
  scrollToEnd();
  if (window.matchMedia("(min-width: 50rem)").matches) question.focus();
})();
