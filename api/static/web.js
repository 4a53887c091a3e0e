// The settings page's two small scripts; without them the page is complete as served.
//
// Kind fields: a destination form (data-kinds) holds every kind's fields; only the
// selected kind's are shown and sent (the others are hidden and disabled). Without the
// script all are shown, and the server reads the selected kind's only.
(function () {
  "use strict";
  function apply(form, select) {
    form.querySelectorAll("fieldset.kind-fields").forEach(function (group) {
      var chosen = group.getAttribute("data-kind") === select.value;
      group.hidden = !chosen;
      group.disabled = !chosen;
    });
  }
  document.querySelectorAll("form[data-kinds]").forEach(function (form) {
    var select = form.querySelector('select[name="kind"]');
    if (!select) { return; }
    select.addEventListener("change", function () { apply(form, select); });
    apply(form, select);
  });
}());

// Live status: applies the pushes of the Server-Sent Events stream to the status cells.
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
