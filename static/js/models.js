// The Models page's downloads, kept live over a websocket. Text only (textContent): nothing
// the server sends is ever parsed as HTML. A download started elsewhere (the command line)
// appears at the next reload. A download that receives nothing for STALL_SECONDS shows
// that, rather than the last speed it had.
(() => {
  "use strict";
  const table = document.querySelector("#downloads tbody");
  const live = document.getElementById("live");
  if (!table) return;
  const STALL_SECONDS = 10;
  const heard = new Map();  // download id -> when it last made progress, and where it stood

  function showDownload(download) {
    const row = table.querySelector(`tr[data-download="${CSS.escape(String(download.id))}"]`);
    if (!row) return;
    heard.set(String(download.id), { at: Date.now(), progress: download.progress });
    row.dataset.state = download.state;
    row.dataset.retryable = String(download.retryable);
    row.dataset.stalled = "false";
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

  function showStalls() {
    for (const row of table.querySelectorAll('tr[data-state="downloading"]')) {
      const last = heard.get(row.dataset.download);
      if (!last) {
        heard.set(row.dataset.download, { at: Date.now(), progress: row.querySelector(".detail").textContent });
        continue;
      }
      const quiet = Math.floor((Date.now() - last.at) / 1000);
      if (quiet < STALL_SECONDS) continue;
      row.dataset.stalled = "true";
      row.querySelector(".detail").textContent = `${last.progress}, stalled: nothing received for ${quiet} s`;
    }
  }

  connect();
  setInterval(showStalls, 1000);
})();
