// The chat's cross-check: the last question asked of 2 to 4 models at once (local and outside,
// each price shown), their answers side by side (stacked on a phone) with the local model's note
// on where they agree and differ. Not kept in the conversation. It uses what shared.js shares
// (window.sovereignChat) and registers itself there. Answers' HTML comes from the server's
// Markdown renderer, which lets no script or event handler through. Before an outside model is
// asked, the member sees what leaves the node (chat_preview.js) and sends or cancels.
(() => {
  "use strict";
  const shared = window.sovereignChat;
  const section = document.getElementById("crosscheck");
  if (!shared || !section) return;

  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };

  function close() {
    section.hidden = true;
    section.replaceChildren();
  }

  // The form: every model of the picker, its price shown, the answer's own model and the
  // stronger one ticked.
  function open(answer) {
    if (shared.running || answer !== shared.transcript.lastElementChild) return;
    const question = answer.previousElementSibling;
    if (shared.place(question) === null) return window.location.reload();  // the page is behind
    const answeredBy = answer.querySelector(".provenance summary")?.textContent.split(" · ")[0];
    const ticked = new Set([answeredBy, shared.strongerModel()?.value].filter(Boolean));
    const choices = el("fieldset", { className: "crosscheck-models" }, el("legend", { textContent: "Models to ask (2 to 4)" }));
    for (const option of shared.modelSelect().options) {
      const box = el("input", { type: "checkbox", name: "checked", value: option.value, checked: ticked.has(option.value) });
      if (shared.isPriced(option)) box.dataset.priceMsat = option.dataset.priceMsat;
      const price = shared.priceLine(Number(option.dataset.priceMsat));
      const where = shared.isProvider(option) ? `by ${option.dataset.provider} · ${price}`
        : shared.isPriced(option) ? `a ${option.dataset.route} route · ${price}` : "on this node · free";
      choices.append(el("label", {}, box, el("span", { className: "model-name", textContent: option.value }), el("small", { textContent: where })));
    }
    const submit = el("button", { type: "submit", className: "primary" });
    const cancel = el("button", { type: "button", textContent: "Cancel" });
    const problem = el("output", { className: "crosscheck-error", role: "alert" });
    const panel = el("form", { className: "crosscheck-form" },
      el("h2", { textContent: "Cross-check the last question" }),
      el("p", { className: "hint", textContent: "The models answer it side by side, and the local model writes a short note on where they agree and differ. Not kept in the conversation." }),
      choices, el("div", { className: "crosscheck-buttons" }, submit, cancel), problem);
    const tickedBoxes = () => [...choices.querySelectorAll("input:checked")];
    const total = () => {
      const boxes = tickedBoxes();
      const price = boxes.reduce((sum, box) => sum + Number(box.dataset.priceMsat || 0), 0);
      submit.textContent = `Ask ${boxes.length} models` + (price ? ` · up to ${shared.sats(price)}` : "");
      submit.disabled = boxes.length < 2 || boxes.length > 4;
    };
    choices.addEventListener("change", total);
    total();
    cancel.addEventListener("click", () => { close(); answer.querySelector(".crosscheck-open")?.focus(); });
    panel.addEventListener("submit", (event) => {
      event.preventDefault();
      ask(question, tickedBoxes(), problem);
    });
    section.replaceChildren(panel);
    section.hidden = false;
    section.scrollIntoView({ block: "nearest" });
    choices.querySelector("input").focus();
  }

  async function ask(question, boxes, problem) {
    if (shared.running) return;
    const models = boxes.map((box) => box.value);
    const prices = Object.fromEntries(boxes.filter((box) => box.dataset.priceMsat !== undefined).map((box) => [box.value, Number(box.dataset.priceMsat)]));
    const body = { models, prices, settings: shared.chatSettings() };
    if (shared.isPrivate) Object.assign(body, { private: true, question: question.querySelector(".bubble").textContent, history: shared.privateHistory.slice(0, shared.place(question)) });
    else Object.assign(body, { conversation: shared.conversation, regenerate: shared.place(question) });
    problem.textContent = "";
    if (!(await previewed(body, problem))) return;
    const panel = section.firstElementChild;
    const progress = el("p", { className: "crosscheck-progress", role: "status" },
      el("span", { className: "spinner", ariaHidden: "true" }), `Asking ${models.length} models… the answers come together.`);
    panel.hidden = true;
    section.append(progress);
    const controller = new AbortController();
    shared.setRunning(controller);
    try {
      const response = await shared.post(shared.crossCheckUrl, body, controller.signal);
      const result = await response.json().catch(() => ({ error: `The node answered ${response.status}.` }));
      if (!response.ok) throw new Error(result.error);
      section.replaceChildren(resultOf(result));
      section.scrollIntoView({ block: "start" });
    } catch (error) {
      progress.remove();
      panel.hidden = false;
      problem.textContent = error.name === "AbortError" ? "Stopped. Models already asked may have been paid: the wallet shows it." : error.message;
      shared.refreshPrices();
    } finally {
      if (shared.running === controller) shared.setRunning(null);
    }
  }

  // Before an outside model is asked: what leaves the node, to each (chat_preview.js), sent or
  // cancelled. Cancelled or refused, the form is as it was and nothing was sent.
  async function previewed(body, problem) {
    if (!body.models.some((model) => model.includes("/"))) return true;  // local names have no slash
    const controller = new AbortController();
    shared.setRunning(controller);  // Stop (or Esc) while the node works it out gives up asking
    let shown = null;
    try {
      shown = await shared.preview.whatLeaves(body, controller.signal);
    } catch (error) {
      if (error.name !== "AbortError") problem.textContent = error.message;
      shared.refreshPrices();  // a price that went up is shown as it is now
    } finally {
      if (shared.running === controller) shared.setRunning(null);
    }
    const options = [...shared.modelSelect().options];
    const optionOf = (model) => options.find((option) => option.value === model);
    const sent = shown !== null && (await shared.preview.confirmEach(shown, optionOf));
    // Each model is sent what it was shown it would be, or nothing.
    if (sent) body.leaving = Object.fromEntries(shown.leaving.filter((each) => each.digest).map((each) => [each.model, each.digest]));
    return sent;
  }

  function resultOf(result) {
    const closer = el("button", { type: "button", className: "icon-button", textContent: "✕", ariaLabel: "Close the cross-check" });
    closer.addEventListener("click", close);
    const answers = el("div", { className: "crosscheck-answers" });
    for (const shown of result.answers) {
      const who = shown.error ? "no answer" : [
        shown.answered_by && shown.answered_by !== shown.model ? `answered by ${shown.answered_by}` : "",
        shown.provider ? `by ${shown.provider}` : "on this node",
        shown.provider ? (typeof shown.cost_msat === "number" ? shared.sats(shown.cost_msat) : "") : "free",
      ].filter(Boolean).join(" · ");
      const article = el("article", { className: "checked" }, el("h3", { textContent: shown.model }), el("p", { className: "who", textContent: who }));
      if (shown.error) {
        article.classList.add("failed");
        article.append(el("p", { className: "checked-error", textContent: shown.error }));
      } else {
        const rendered = el("div", { className: "markdown" });
        rendered.innerHTML = shown.html;  // sanitised by the server (apps/inference/markdown.py)
        shared.decorateCode(rendered);
        article.append(rendered);
      }
      answers.append(article);
    }
    const note = el("div", { className: "crosscheck-note" }, el("h3", { textContent: "Where they agree and differ" }));
    if (result.note_html) {
      const rendered = el("div", { className: "markdown" });
      rendered.innerHTML = result.note_html;  // sanitised by the server, as above
      note.append(rendered, el("p", { className: "who", textContent: "A note by the local model." }));
    } else {
      note.append(el("p", { className: "who", textContent: result.note_missing || "The local model wrote no note this time." }));
    }
    return el("div", { className: "crosscheck-result" },
      el("div", { className: "crosscheck-head" }, el("h2", { textContent: "Cross-check · not kept" }), closer),
      answers, note);
  }

  shared.crossCheck = { open, close };
})();
