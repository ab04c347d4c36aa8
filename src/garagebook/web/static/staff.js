// The staff day view: refreshes the grid every few seconds (a booking from the web or the API
// appears without reloading), asks before cancelling, and prints. Plain JavaScript.
"use strict";
(function () {
  const grid = document.getElementById("grid");
  if (!grid) return;
  const every = Number(grid.dataset.refreshMs) || 2000;
  const url = "/staff/grid?date=" + encodeURIComponent(grid.dataset.date);
  let last = null; // the last fragment fetched

  async function refresh() {
    if (document.hidden) return;
    try {
      const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (r.status === 401) { window.location.assign("/staff/login"); return; }
      if (!r.ok) return;
      const html = await r.text();
      if (html === last) return;
      const focused = document.activeElement && grid.contains(document.activeElement) ? document.activeElement.id : null;
      last = html;
      grid.innerHTML = html; // server-rendered and escaped by Jinja2
      if (focused) document.getElementById(focused)?.focus();
      updateWalkInTimes();
    } catch (e) { /* offline for a moment: try again next time */ }
  }
  // The walk-in form offers the free times the grid shows now, not those of the page load,
  // and of those only the ones where the chosen service fits (the server checks it too).
  function updateWalkInTimes() {
    const select = document.getElementById("w-slot");
    if (!select) return;
    const chosen = select.value;
    const options = Array.from(grid.querySelectorAll("td[data-free-slot]"), (cell) => {
      const option = document.createElement("option");
      option.value = cell.dataset.freeSlot;
      option.textContent = cell.dataset.freeLabel;
      option.dataset.fits = cell.dataset.fits || "";
      return option;
    });
    select.replaceChildren(...options);
    if (options.some((o) => o.value === chosen)) select.value = chosen;
    offerFittingTimes();
  }
  function offerFittingTimes() {
    const select = document.getElementById("w-slot");
    const service = document.getElementById("w-service");
    if (!select || !service) return;
    let fitting = 0;
    for (const option of select.options) {
      const fits = (option.dataset.fits || "").split(" ").includes(service.value);
      option.hidden = !fits;
      option.disabled = !fits;
      if (fits) fitting += 1;
    }
    const current = select.selectedOptions[0];
    if (!current || current.disabled) {
      const first = Array.from(select.options).find((o) => !o.disabled);
      if (first) select.value = first.value;
    }
    const hint = document.getElementById("w-slot-hint");
    const name = service.selectedOptions[0] ? service.selectedOptions[0].textContent : "";
    if (hint) {
      hint.textContent = fitting
        ? "Times where a " + name + " fits on that bay."
        : "A " + name + " fits nowhere on this day: the free times are too short or too late.";
    }
  }
  document.getElementById("w-service")?.addEventListener("change", offerFittingTimes);
  offerFittingTimes();

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);

  document.addEventListener("submit", (event) => {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
  document.getElementById("print")?.addEventListener("click", () => window.print());
})();
