// The live results view: one row per result from /live/stream (Server-Sent Events).
// Every value is set with textContent, never as markup: a result's fields come from Kafka.
"use strict";
(function () {
  const status = document.getElementById("live-status");
  const body = document.querySelector("table.live tbody");
  const columns = ["time", "flow", "event_id", "key", "model", "latency_ms", "cost_usd", "output"];
  const source = new EventSource("/live/stream");
  source.addEventListener("ready", function (message) {
    const info = JSON.parse(message.data);
    status.textContent = "Watching " + info.topic + " (" + info.partitions + " partitions): new results appear below.";
    status.dataset.ready = "true";
  });
  source.addEventListener("result", function (message) {
    const result = JSON.parse(message.data);
    const row = document.createElement("tr");
    row.dataset.eventId = result.event_id || "";
    if (result.error) {
      const cell = document.createElement("td");
      cell.colSpan = columns.length;
      cell.textContent = result.where + ": " + result.error;
      row.appendChild(cell);
    } else {
      for (const name of columns) {
        const cell = document.createElement("td");
        cell.textContent = String(result[name]);
        row.appendChild(cell);
      }
      if (result.redriven) row.classList.add("redriven");
    }
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
  });
  source.onerror = function () {
    status.textContent = "Disconnected from the results stream; retrying…";
    status.dataset.ready = "false";
  };
})();
