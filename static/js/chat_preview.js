// The chat's preview: before a question goes to an outside model (a provider's or a route's), the
// node says exactly what would leave it: each message as it would be sent, private values
// replaced by placeholders (highlighted), and where it goes. The member sends or cancels; until
// Send nothing is sent, paid or recorded. A hard stop (a seed phrase, a private key) is shown
// with only Cancel. A cross-check (chat_crosscheck.js) is shown the same way, for each outside
// model it asks. It uses what chat.js shares (window.sovereignChat) and registers itself
// there. What the node sends back is shown with textContent only.
(() => {
  "use strict";
  const shared = window.sovereignChat;
  const dialog = document.getElementById("leaving");
  if (!shared || !dialog) return;
  const send = document.getElementById("leaving-send");
  const cancel = document.getElementById("leaving-cancel");
  const PLACEHOLDER = /\[[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_[1-9][0-9]*\]/g;  // as apps/privacy/vault.py writes them
  const ROLES = { system: "System prompt", user: "Question", assistant: "Answer" };
  const HARD_STOP = "secret_in_request";
  // What leaves may be longer than a phone's screen: the keyboard scrolls it too.
  dialog.querySelector(".leaving-scroll").tabIndex = 0;

  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children);
    return node;
  };

  // The text with each placeholder marked, when placeholders were put in (not for a trusted provider).
  function marked(text, redacted) {
    const block = el("div", { className: "leaving-text" });
    let from = 0;
    for (const match of redacted ? text.matchAll(PLACEHOLDER) : []) {
      block.append(text.slice(from, match.index), el("mark", { textContent: match[0] }));
      from = match.index + match[0].length;
    }
    block.append(text.slice(from));
    return block;
  }

  function messageShown(message, redacted) {
    return el("li", {}, el("span", { className: "leaving-role", textContent: ROLES[message.role] || message.role }), marked(message.content, redacted));
  }

  // The question in full; what was said before it (and the system prompt) folded beneath.
  function messagesShown(messages, redacted) {
    const last = messages[messages.length - 1];
    const list = el("ol", { className: "leaving-messages" }, messageShown(last, redacted));
    const earlier = messages.slice(0, -1);
    if (!earlier.length) return [list];
    const count = earlier.length === 1 ? "1 message" : `${earlier.length} messages`;
    const before = el("details", { className: "leaving-earlier" },
      el("summary", { textContent: `Also sent: the conversation before it (${count})` }),
      el("ol", { className: "leaving-messages" }, ...earlier.map((message) => messageShown(message, redacted))));
    return [list, before];
  }

  function whereTo(shown, model, option) {
    const price = shared.isPriced(option) ? ` · ${shared.priceLine(Number(option.dataset.priceMsat))}` : "";
    const who = el("strong", { textContent: shown.provider });
    return shared.isProvider(option) ? ["To ", who, ` · ${model}${price}`] : [`Through ${model}, first to `, who, price];
  }

  function foundLine(shown) {
    if (shown.trusted) return "Trusted provider: sent as written.";
    if (!shown.found_said) return "Nothing private found: sent as written.";
    return `${shown.found_said} replaced by placeholders (highlighted). The answer comes back with them put back.`;
  }

  function fill(shown, model, option) {
    dialog.querySelector("#leaving-to").replaceChildren(...whereTo(shown, model, option));
    const found = dialog.querySelector("#leaving-found");
    found.textContent = foundLine(shown);
    found.classList.toggle("redacted", Boolean(shown.found_said) && !shown.trusted);
    dialog.querySelector("#leaving-body").replaceChildren(...messagesShown(shown.messages, !shown.trusted));
    send.hidden = false;
  }

  function stopped(refusal) {
    dialog.querySelector("#leaving-to").replaceChildren();
    dialog.querySelector("#leaving-body").replaceChildren(el("p", { className: "leaving-stop", textContent: refusal.error }));
    dialog.querySelector("#leaving-found").textContent = "";
    send.hidden = true;
  }

  // A cross-check: each outside model it asks and how its text leaves, then the text itself.
  // Each model's request has placeholders of its own, so models sent alike share one text.
  function fillEach(shown, optionOf) {
    const count = shown.leaving.length === 1 ? "1 outside model" : `${shown.leaving.length} outside models`;
    dialog.querySelector("#leaving-to").textContent = `Cross-check: it asks ${count}, each in a request of its own.`;
    const sent = shown.leaving.filter((each) => !each.refused);
    const redacted = sent.filter((each) => !each.trusted && each.found_said);
    const found = dialog.querySelector("#leaving-found");
    found.textContent = foundLineEach(sent, redacted);
    found.classList.toggle("redacted", redacted.length > 0);
    const models = el("ul", { className: "leaving-models" }, ...shown.leaving.map((each) => modelShown(each, optionOf(each.model))));
    dialog.querySelector("#leaving-body").replaceChildren(models, ...textsShown(sent));
    send.hidden = false;
  }

  function foundLineEach(sent, redacted) {
    if (!sent.length) return "";
    if (sent.every((each) => each.trusted)) return sent.length === 1 ? "Trusted provider: sent as written." : "Trusted providers: sent as written.";
    if (!redacted.length) return "Nothing private found: sent as written.";
    const toSome = sent.some((each) => each.trusted) ? " for the providers not trusted" : "";
    return `${redacted[0].found_said} replaced by placeholders (highlighted)${toSome}. The answers come back with them put back.`;
  }

  function modelShown(each, option) {
    const how = each.refused ? `Nothing goes to it. ${each.refused}`
      : each.trusted ? "Trusted provider: sent as written."
      : each.found_said ? "Private values replaced by placeholders." : "Nothing private found: sent as written.";
    const where = each.refused ? [el("strong", { textContent: each.model })] : whereTo(each, each.model, option);
    return el("li", { className: each.refused ? "refused" : "" }, el("span", {}, ...where), el("small", { textContent: how }));
  }

  function textsShown(sent) {
    const alike = new Map();
    for (const each of sent) {
      const key = JSON.stringify(each.messages);
      alike.set(key, [...(alike.get(key) || []), each]);
    }
    return [...alike.values()].map((models) => el("section", { className: "leaving-sent" },
      el("h3", { textContent: `Sent to ${models.map((each) => each.model).join(", ")}` }),
      ...messagesShown(models[0].messages, models.some((each) => !each.trusted))));
  }

  // What the question would send: the node's answer, or a hard stop's refusal (shown in the
  // panel). Any other refusal is thrown, to be shown as the question's own refusal would be.
  async function whatLeaves(body, signal) {
    const response = await shared.post(shared.previewUrl, body, signal);
    const shown = await response.json().catch(() => ({ error: `The node answered ${response.status}.` }));
    if (!response.ok && shown.code !== HARD_STOP) throw new Error(shown.error);
    return { ...shown, stopped: !response.ok };
  }

  // Resolves when the member chose: true to send. A question that stays on this node (a route
  // that starts on a local model, a cross-check of the node's models) resolves true at once.
  function confirm(shown, model, option) {
    return chosen(shown, () => fill(shown, model, option));
  }

  // The same for a cross-check; optionOf(model) is its option in the picker.
  function confirmEach(shown, optionOf) {
    return chosen(shown, () => fillEach(shown, optionOf));
  }

  function chosen(shown, filled) {
    if (!shown.stopped && !shown.outside) return Promise.resolve(true);
    if (shown.stopped) stopped(shown);
    else filled();
    dialog.returnValue = "";
    dialog.showModal();
    dialog.querySelector(".leaving-scroll").scrollTop = 0;
    (send.hidden ? cancel : send).focus();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "send"), { once: true });
    });
  }

  shared.preview = { whatLeaves, confirm, confirmEach };
})();
