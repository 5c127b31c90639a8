// Log in with a browser extension (NIP-07): the server issues a single-use challenge, the
// extension signs a NIP-98 event (kind 27235) for the login URL, and the server checks it.
(() => {
  "use strict";
  const button = document.getElementById("nip07-login");
  const status = document.getElementById("login-status");
  if (!button) return;
  const csrf = () => document.querySelector("[name=csrfmiddlewaretoken]").value;

  async function extension() {
    // Extensions inject window.nostr when the page has loaded; give them a moment.
    for (let waited = 0; !window.nostr && waited < 3000; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (!window.nostr) throw new Error("No Nostr extension found (Alby, nos2x…). Use a login code instead.");
    return window.nostr;
  }

  function nextPage() {
    const wanted = new URLSearchParams(location.search).get("next") || "/";
    return wanted.startsWith("/") && !wanted.startsWith("//") ? wanted : "/";
  }

  async function logIn() {
    const nostr = await extension();
    const issued = await fetch("/auth/challenge", { method: "POST", headers: { "X-CSRFToken": csrf() } });
    if (!issued.ok) throw new Error((await issued.json()).error || `HTTP ${issued.status}`);
    const { challenge, path, now } = await issued.json();
    const event = await nostr.signEvent({
      kind: 27235,
      created_at: now,
      content: "",
      tags: [["u", location.origin + path], ["method", "POST"], ["challenge", challenge]],
    });
    const response = await fetch(path, {
      method: "POST",
      headers: { Authorization: "Nostr " + btoa(JSON.stringify(event)), "X-CSRFToken": csrf() },
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error);
    location.assign(nextPage());
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    status.textContent = "Asking your extension to sign…";
    try {
      await logIn();
    } catch (error) {
      status.textContent = error.message;
      button.disabled = false;
    }
  });
})();
