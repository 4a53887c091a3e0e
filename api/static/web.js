// Live status of the settings page: applies the pushes of the Server-Sent Events
// stream to the status cells. Without this script the page is complete as served.
(function () {
  "use strict";
  var table = document.querySelector("[data-stream]");
  if (!table || !window.EventSource) { return; }
  var source = new EventSource(table.getAttribute("data-stream"));

  function cell(row, field) { return row.querySelector('[data-field="' + field + '"]'); }

  function update(status) {
    var row = document.getElementById("dest-" + status.id);
    if (!row) { return; }
    var delivery = cell(row, "delivery");
    if (delivery.textContent !== status.delivery) { delivery.textContent = status.delivery; }
    delivery.classList.toggle("failed", status.failed);
    var badge = cell(row, "badge");
    var label = badge.querySelector(".badge");
    if (label.textContent === status.badge) { return; }
    label.textContent = status.badge;
    label.className = "badge badge-" + status.badge.toLowerCase();
    var reason = badge.querySelector(".reason");
    if (reason) { reason.remove(); }
    if (status.reason) {
      reason = document.createElement("span");
      reason.className = "reason";
      reason.textContent = "(" + status.reason + ")";
      badge.append(" ", reason);
    }
  }

  source.addEventListener("status", function (event) {
    JSON.parse(event.data).destinations.forEach(update);
  });
}());
