// The ways to log in with a Nostr key. Every one ends with the server checking a proof of
// the key; nothing here is trusted by the server on its own.
(() => {
  "use strict";
  const status = document.getElementById("login-status");
  if (!status) return;
  const csrf = () => document.querySelector("[name=csrfmiddlewaretoken]").value;
  const say = (text) => { status.textContent = text; };

  function nextPage() {
    // Only a page of this node: `/\\evil.example` and the like resolve elsewhere.
    const wanted = new URL(new URLSearchParams(location.search).get("next") || "/", location.origin);
    return wanted.origin === location.origin ? wanted.pathname + wanted.search : "/";
  }

  async function post(path, fields = {}, headers = {}) {
    const response = await fetch(path, {
      method: "POST",
      headers: { "X-CSRFToken": csrf(), ...headers },
      body: new URLSearchParams(fields),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    return answer;
  }

  function button(id, run) {
    const element = document.getElementById(id);
    if (!element) return;
    const handler = async (event) => {
      event.preventDefault();
      const control = event.submitter || element;
      control.disabled = true;
      try {
        await run(element);
      } catch (error) {
        say(error.message);
      } finally {
        control.disabled = false;
      }
    };
    element.addEventListener(element.tagName === "FORM" ? "submit" : "click", handler);
  }

  // 1. A browser extension (NIP-07) signs a NIP-98 event carrying the server's challenge.
  async function extension() {
    // Extensions inject window.nostr when the page has loaded; give them a moment.
    for (let waited = 0; !window.nostr && waited < 3000; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (!window.nostr) throw new Error("No Nostr extension found (Alby, nos2x…): use a phone signer or a code.");
    return window.nostr;
  }

  button("nip07-login", async () => {
    const nostr = await extension();
    say("Asking your extension to sign…");
    const { challenge, path, now } = await post("/auth/challenge");
    const event = await nostr.signEvent({
      kind: 27235,
      created_at: now, // the server's clock, so a skewed local clock still works
      content: "",
      tags: [["u", location.origin + path], ["method", "POST"], ["challenge", challenge]],
    });
    await post(path, {}, { Authorization: "Nostr " + btoa(JSON.stringify(event)) });
    location.assign(nextPage());
  });

  // 2. A phone signer (NIP-46): scan a nostrconnect:// QR code, or paste a bunker:// address.
  button("remote-start", async () => {
    const { uri, qr_svg } = await post("/auth/remote/start");
    document.getElementById("remote-qr-image").innerHTML = qr_svg; // made by the server, from its own URI
    document.getElementById("remote-uri").textContent = uri;
    document.getElementById("remote-qr").hidden = false;
    say("Waiting for your signer…");
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const response = await fetch("/auth/remote/status");
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error);
      if (answer.state !== "pending") break;
    }
    location.assign(nextPage());
  });

  button("bunker-form", async (form) => {
    say("Asking your signer to sign (approve it there)…");
    await post("/auth/bunker", { uri: form.elements.uri.value });
    location.assign(nextPage());
  });

  // 3. A one-time code sent to the key by Nostr DM (NIP-17).
  button("code-send-form", async (form) => {
    const { message } = await post("/auth/code/send", { npub: form.elements.npub.value });
    say(message);
    document.getElementById("code-verify-form").hidden = false;
  });

  button("code-verify-form", async (form) => {
    const npub = document.getElementById("code-send-form").elements.npub.value;
    await post("/auth/code/verify", { npub, code: form.elements.code.value });
    location.assign(nextPage());
  });
})();
