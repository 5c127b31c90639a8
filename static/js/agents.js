// The Agents pages, kept live: the node says over a websocket which task changed, and the page
// fetches that task's panel (or the list) again, through the same checks as a page load. A step
// above the step-up threshold is approved with a fresh signature of the owner's key (NIP-07).
(() => {
  "use strict";
  const live = document.getElementById("live");
  const panel = document.getElementById("task-panel");
  const list = document.getElementById("tasks");
  const csrf = () => document.querySelector("[name=csrfmiddlewaretoken]").value;

  // Replace a region with the server's fresh rendering of it (escaped on the server; the
  // page's CSP runs no inline script whatever it holds). One fetch at a time per region, and
  // one more if it changed meanwhile: an older answer never lands after a newer one.
  const fetching = new Map();

  const typing = (region) =>
    region.contains(document.activeElement) && document.activeElement.matches("input, select, textarea");
  // A form being signed must stay in the page until it is sent: a fresh rendering would detach it.
  const signing = (region) => region.querySelector("form[data-signing]") !== null;

  async function refresh(region) {
    if (typing(region) || signing(region)) {
      region.dataset.stale = "yes"; // not while someone types in it (on their next blur) or signs
      return;
    }
    if (fetching.has(region)) {
      fetching.set(region, true);
      return;
    }
    fetching.set(region, false);
    try {
      const response = await fetch(region.dataset.fragment, { headers: { Accept: "text/html" } });
      const text = response.ok ? await response.text() : null;
      if (text !== null && (typing(region) || signing(region))) {
        region.dataset.stale = "yes"; // they began typing while it was fetched
      } else if (text !== null) {
        const fresh = new DOMParser().parseFromString(text, "text/html");
        region.replaceChildren(...fresh.body.childNodes);
        delete region.dataset.stale;
      }
    } finally {
      const again = fetching.get(region);
      fetching.delete(region);
      if (again) refresh(region);
    }
  }

  for (const region of [panel, list]) {
    if (!region) continue;
    region.addEventListener("focusout", () => { if (region.dataset.stale) setTimeout(() => refresh(region), 300); });
  }

  function changed(event) {
    if (panel && Number(panel.dataset.task) === event.task_id) refresh(panel);
    if (list) refresh(list);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/agents/`);
    socket.addEventListener("open", async () => {
      // What changed between the page's rendering and now was announced to nobody: catch up,
      // then say the page is live.
      await Promise.all([panel, list].filter(Boolean).map(refresh));
      live.dataset.live = "on";
      live.textContent = "Live";
    });
    socket.addEventListener("message", (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "changed") changed(event);
    });
    socket.addEventListener("close", () => {
      live.dataset.live = "off";
      live.textContent = "Reconnecting…";
      setTimeout(connect, 2000);
    });
  }

  // The new task form: outside models only for a template that asks them.
  const form = document.getElementById("new-task");
  if (form) {
    const outside = document.getElementById("outside-models");
    const shown = () => {
      const picked = form.querySelector("input[name=template]:checked");
      outside.hidden = !picked || picked.dataset.outside === "0";
    };
    form.addEventListener("change", shown);
    shown();
  }

  async function signer() {
    for (let waited = 0; !window.nostr && waited < 3000; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (!window.nostr) throw new Error("No Nostr extension found to sign with: approve this step from the shell.");
    return window.nostr;
  }

  // Step-up: a challenge from the node, signed as a login is, sent with the approval.
  async function signedApproval(approve) {
    const status = approve.querySelector(".step-up-status");
    status.textContent = "Asking your extension to sign…";
    const nostr = await signer();
    const response = await fetch(approve.dataset.stepUp, { method: "POST", headers: { "X-CSRFToken": csrf() } });
    const issued = await response.json();
    if (!response.ok) throw new Error(issued.error || `HTTP ${response.status}`);
    const event = await nostr.signEvent({
      kind: 27235,
      created_at: issued.now,
      content: "",
      tags: [["u", location.origin + issued.path], ["method", "POST"], ["challenge", issued.challenge]],
    });
    approve.elements.signed_event.value = JSON.stringify(event);
    status.textContent = "Signed; approving…";
    approve.submit();
  }

  document.addEventListener("submit", (submit) => {
    const approve = submit.target;
    if (!(approve instanceof HTMLFormElement) || !approve.dataset.stepUp) return;
    submit.preventDefault();
    approve.dataset.signing = "yes";
    signedApproval(approve).catch((error) => {
      approve.querySelector(".step-up-status").textContent = error.message;
      delete approve.dataset.signing;
      const region = approve.closest("[data-fragment]");
      if (region && region.dataset.stale) refresh(region);
    });
  });

  if (live) connect();
})();
