// The Models page's downloads, kept live over a websocket. Text only (textContent): nothing
// the server sends is ever parsed as HTML. A download started elsewhere (the command line)
// appears at the next reload.
(() => {
  "use strict";
  const table = document.querySelector("#downloads tbody");
  const live = document.getElementById("live");

  function showDownload(download) {
    const row = table.querySelector(`tr[data-download="${CSS.escape(String(download.id))}"]`);
    if (!row) return;
    row.dataset.state = download.state;
    row.querySelector(".state").textContent = download.state_label;
    row.querySelector(".detail").textContent = download.detail;
    const bar = row.querySelector("progress");
    if (download.total_bytes) {
      bar.max = download.total_bytes;
      bar.value = download.bytes_done;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/models/downloads/`);
    socket.addEventListener("open", () => {
      live.dataset.live = "on";
      live.textContent = "Live";
    });
    socket.addEventListener("message", (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "download") showDownload(event);
    });
    socket.addEventListener("close", () => {
      live.dataset.live = "off";
      live.textContent = "Reconnecting…";
      setTimeout(connect, 2000);
    });
  }

  connect();
})();
