// The System page, kept live over a websocket. Text only (textContent): nothing the
// server sends is ever parsed as HTML.
(() => {
  "use strict";
  const table = document.querySelector("#status tbody");
  const live = document.getElementById("live");
  const probeForm = document.getElementById("probe-form");
  const probeResult = document.getElementById("probe-result");
  const PROBE_PATIENCE_MS = 15000;
  let pendingProbe = null;

  function rowFor(component) {
    let row = table.querySelector(`tr[data-component="${CSS.escape(component.name)}"]`);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.component = component.name;
      row.append(document.createElement("th"), document.createElement("td"), document.createElement("td"));
      row.children[0].scope = "row";
      row.children[1].className = "state";
      row.children[2].className = "detail";
      table.append(row);
    }
    return row;
  }

  function showStatus(status) {
    for (const component of status.components) {
      const row = rowFor(component);
      row.dataset.state = component.state;
      row.children[0].textContent = component.label;
      row.children[1].textContent = component.state;
      row.children[2].textContent = component.detail;
    }
  }

  function showProbe(event) {
    if (!pendingProbe || event.probe_id !== pendingProbe.id) return;
    clearTimeout(pendingProbe.timer);
    pendingProbe = null;
    probeResult.textContent = `${event.worker} ran it in ${event.round_trip_ms} ms.`;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/system/`);
    socket.addEventListener("open", () => {
      live.dataset.live = "on";
      live.textContent = "Live";
    });
    socket.addEventListener("message", (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "status") showStatus(event);
      if (event.type === "probe") showProbe(event);
    });
    socket.addEventListener("close", () => {
      live.dataset.live = "off";
      live.textContent = "Reconnecting…";
      setTimeout(connect, 2000);
    });
  }

  probeForm.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    probeResult.textContent = "Sent; waiting for the worker…";
    const response = await fetch(probeForm.action, {
      method: "POST",
      headers: { "X-CSRFToken": probeForm.elements.csrfmiddlewaretoken.value },
    });
    if (!response.ok) {
      probeResult.textContent = `The node refused the test task (HTTP ${response.status}).`;
      return;
    }
    const { probe_id } = await response.json();
    const timer = setTimeout(() => {
      pendingProbe = null;
      probeResult.textContent = `No answer after ${PROBE_PATIENCE_MS / 1000} s: is the worker running?`;
    }, PROBE_PATIENCE_MS);
    pendingProbe = { id: probe_id, timer };
  });

  connect();
})();
