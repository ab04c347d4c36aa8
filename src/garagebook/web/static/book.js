// The booking page's enhancement: hold a picked time (POST /api/holds) with a countdown,
// then book it (POST /api/bookings). Plain JavaScript, no build step. Everything typed is
// kept in sessionStorage, so it survives a lost hold, an error or a reload.
"use strict";
(function () {
  const root = document.getElementById("booking");
  const form = document.getElementById("details-form");
  if (!root || !form) return;
  // A drop-off is booked by day: no time to hold, and its details form posts to /book.
  if (root.dataset.mode === "drop_off") return;

  const serviceId = Number(root.dataset.serviceId);
  const day = root.dataset.date;
  const ttl = Number(root.dataset.holdTtl) || 300;
  const $ = (id) => document.getElementById(id);
  const times = $("times");
  const status = $("status");
  const alternatives = $("alternatives");
  const details = $("details");
  const holdBox = $("hold");
  const countdown = $("countdown");
  const confirmButton = $("confirm");
  const STORE = "garagebook.details";
  const FIELDS = ["name", "email", "phone", "registration", "make", "model", "notes"];
  const API_FIELD = {
    "customer.name": "name", "customer.email": "email", "customer.phone": "phone",
    "vehicle.registration": "registration", "vehicle.make": "make",
    "vehicle.model": "model", "notes": "notes",
  };

  let hold = null; // {token, slotId, startsAt, label, deadline}
  let timer = null;
  let idempotencyKey = null;
  const refused = new Set(); // slot ids the server said are taken

  // --- typed data survives everything -------------------------------------------------------
  function saveForm() {
    const data = {};
    for (const name of FIELDS) data[name] = form.elements[name].value;
    try { sessionStorage.setItem(STORE, JSON.stringify(data)); } catch (e) { /* private mode */ }
  }
  function restoreForm() {
    let data = null;
    try { data = JSON.parse(sessionStorage.getItem(STORE) || "null"); } catch (e) { data = null; }
    if (!data) return;
    for (const name of FIELDS) if (typeof data[name] === "string") form.elements[name].value = data[name];
  }
  form.addEventListener("input", (event) => {
    saveForm();
    idempotencyKey = null;
    clearIfFixed(event.target.name);
  });

  // --- messages ------------------------------------------------------------------------------
  function say(text, kind) {
    status.textContent = text;
    status.className = "status" + (kind ? " " + kind : "");
  }
  function label(startsAt) { return startsAt.slice(11, 16); } // already the garage's local time

  // --- time buttons --------------------------------------------------------------------------
  function timeButton(slot) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "choice time";
    b.dataset.slotId = String(slot.id);
    b.dataset.startsAt = slot.starts_at;
    b.textContent = label(slot.starts_at);
    return b;
  }
  async function freeSlots() {
    const q = new URLSearchParams({ date: day, service_id: String(serviceId), available: "true" });
    const r = await fetch("/api/slots?" + q.toString());
    if (!r.ok) return [];
    // Slots refused to us are held or booked by someone else, even if not yet listed so.
    const seen = new Set();
    return (await r.json())
      .filter((s) => !refused.has(s.id))
      .filter((s) => !seen.has(s.starts_at) && seen.add(s.starts_at));
  }
  async function refreshTimes() {
    const slots = await freeSlots();
    times.replaceChildren(...slots.map(timeButton));
    if (!slots.length) {
      const p = document.createElement("p");
      p.textContent = "No free times left on this day. Please pick another day.";
      times.append(p);
    }
    markPicked();
  }
  function markPicked() {
    for (const b of document.querySelectorAll("button.time")) {
      b.setAttribute("aria-pressed", hold && Number(b.dataset.slotId) === hold.slotId ? "true" : "false");
    }
  }
  async function offerAlternatives(refusedSlotId, startsAt) {
    const wanted = Date.parse(startsAt);
    refused.add(refusedSlotId);
    const slots = await freeSlots();
    // A slot at the same time on another bay is shown as that same time: still a choice.
    slots.sort((a, b) => Math.abs(Date.parse(a.starts_at) - wanted) - Math.abs(Date.parse(b.starts_at) - wanted));
    const nearest = slots.slice(0, 4).sort((a, b) => Date.parse(a.starts_at) - Date.parse(b.starts_at));
    alternatives.replaceChildren();
    if (!nearest.length) {
      alternatives.hidden = true;
      return "There are no other free times that day; please pick another day.";
    }
    const h = document.createElement("p");
    h.textContent = "Nearest free times:";
    alternatives.append(h, ...nearest.map(timeButton));
    alternatives.hidden = false;
    if (nearest.some((s) => s.starts_at === startsAt)) {
      return "The same time is still free in another bay: pick it below, or a time near it.";
    }
    return "Please pick one of the nearest free times below.";
  }

  // --- holds ---------------------------------------------------------------------------------
  async function release() {
    if (!hold) return;
    const token = hold.token;
    hold = null;
    stopTimer();
    try { await fetch("/api/holds/" + encodeURIComponent(token), { method: "DELETE", keepalive: true }); } catch (e) { /* it expires anyway */ }
  }
  function stopTimer() { if (timer) { clearInterval(timer); timer = null; } }
  function tick() {
    if (!hold) return;
    const left = Math.max(0, Math.round((hold.deadline - Date.now()) / 1000));
    countdown.textContent = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
    if (left <= 0) expired();
  }
  async function expired() {
    const what = hold ? hold.label : "";
    await release();
    holdBox.hidden = true;
    confirmButton.disabled = true;
    markPicked();
    say("Your hold on " + what + " has run out and the time was released. Your details are still here: pick a time to hold it again.", "warning");
    await refreshTimes();
  }

  async function pick(button) {
    const slotId = Number(button.dataset.slotId);
    const startsAt = button.dataset.startsAt;
    if (hold && hold.slotId === slotId) return;
    await release();
    say("Holding " + label(startsAt) + "…");
    let r;
    try {
      r = await fetch("/api/holds", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ slot_id: slotId, service_id: serviceId }),
      });
    } catch (e) {
      say("We could not reach the garage's booking system. Check your connection and try again.", "error");
      return;
    }
    if (r.status === 201) {
      const body = await r.json();
      const remaining = Math.min(ttl * 1000, Date.parse(body.expires_at) - Date.now());
      hold = { token: body.hold_token, slotId, startsAt, label: label(startsAt), deadline: Date.now() + Math.max(remaining, 0) };
      alternatives.hidden = true;
      holdBox.hidden = false;
      details.hidden = false;
      confirmButton.disabled = false;
      const when = $("step-time").textContent.replace(/^3\. Time on /, "") + " at " + hold.label;
      $("hold-what").textContent = (root.dataset.service ? root.dataset.service + ", " : "") + when;
      say(hold.label + " is held for you. Fill in your details below.", "ok");
      markPicked();
      tick();
      timer = setInterval(tick, 1000);
      // On a phone the form is below the fold: bring what just changed into view, and move
      // the focus there (screen readers read the hold; Tab goes on to the form).
      details.scrollIntoView({ block: "start" });
      holdBox.focus({ preventScroll: true });
      return;
    }
    if (r.status === 409 || r.status === 404 || r.status === 422) {
      const extra = await offerAlternatives(slotId, startsAt);
      await refreshTimes();
      say(label(startsAt) + " has just been taken by someone else. " + extra, "error");
      return;
    }
    if (r.status === 429) {
      say("Too many tries from your connection in a short time. Wait a minute, then pick a time again.", "error");
      return;
    }
    say("Something went wrong holding that time. Please try again.", "error");
  }

  root.addEventListener("click", (event) => {
    const button = event.target.closest("button.time");
    if (!button) return;
    event.preventDefault(); // without the script, the button posts to /book/hold instead
    pick(button);
  });
  $("release").addEventListener("click", async () => {
    await release();
    holdBox.hidden = true;
    confirmButton.disabled = true;
    markPicked();
    say("The time was released. Pick another time; your details are kept.");
    times.querySelector("button.time")?.focus();
  });
  window.addEventListener("pagehide", () => { if (hold) release(); });

  // --- validation (the server checks the same rules) ----------------------------------------
  function normaliseRegistration(value) {
    const compact = value.toUpperCase().replace(/\s+/g, "");
    // Current UK format: two letters, two digits, three letters → "AB12 CDE".
    if (/^[A-Z]{2}[0-9]{2}[A-Z]{3}$/.test(compact)) return compact.slice(0, 4) + " " + compact.slice(4);
    return value.toUpperCase().trim().replace(/\s+/g, " ");
  }
  form.elements.registration.addEventListener("blur", () => {
    form.elements.registration.value = normaliseRegistration(form.elements.registration.value);
    saveForm();
  });
  function showError(name, message) {
    const input = form.elements[name];
    $("e-" + name).textContent = message;
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
  // An error shown under a field goes as soon as what is typed there is right, not at the
  // next submit (a new error only appears on submit: no scolding while someone types).
  function clearIfFixed(name) {
    if (!FIELDS.includes(name) || !$("e-" + name).textContent) return;
    if (!validate()[name]) showError(name, "");
  }
  function validate() {
    const v = (n) => form.elements[n].value.trim();
    const errors = {};
    if (!v("name")) errors.name = "Enter your name.";
    if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v("email"))) errors.email = "Enter an email address like name@example.com.";
    if (v("phone") && !/^\+?[0-9][0-9 ()\-]{5,24}$/.test(v("phone"))) errors.phone = "Enter a phone number using digits, spaces or dashes.";
    const reg = normaliseRegistration(v("registration"));
    if (!/^[A-Z0-9]{1,8}( [A-Z0-9]{1,8})?$/.test(reg)) errors.registration = "Enter the registration, e.g. AB12 CDE.";
    return errors;
  }
  function showErrors(errors) {
    for (const name of FIELDS) showError(name, errors[name] || "");
    const first = FIELDS.find((n) => errors[n]);
    if (first) form.elements[first].focus();
    return !first;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    $("form-error").textContent = "";
    form.elements.registration.value = normaliseRegistration(form.elements.registration.value);
    saveForm();
    if (!showErrors(validate())) return;
    if (!hold) {
      $("form-error").textContent = "Pick a time first: it is held for you while you finish.";
      return;
    }
    const v = (n) => form.elements[n].value.trim() || null;
    const body = {
      slot_id: hold.slotId, service_id: serviceId, hold_token: hold.token,
      customer: { name: v("name"), email: v("email"), phone: v("phone") },
      vehicle: { registration: v("registration"), make: v("make"), model: v("model") },
      notes: v("notes"),
    };
    if (!idempotencyKey) {
      const bytes = new Uint8Array(16);
      crypto.getRandomValues(bytes);
      idempotencyKey = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    }
    confirmButton.disabled = true;
    let r;
    try {
      r = await fetch("/api/bookings", {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": idempotencyKey },
        body: JSON.stringify(body),
      });
    } catch (e) {
      confirmButton.disabled = false;
      $("form-error").textContent = "We could not reach the booking system. Your details are kept: try again.";
      return;
    }
    const answer = await r.json().catch(() => ({}));
    if (r.status === 201) {
      stopTimer();
      hold = null;
      try { sessionStorage.removeItem(STORE); } catch (e) { /* ignore */ }
      window.location.assign("/manage/" + encodeURIComponent(answer.cancel_token));
      return;
    }
    confirmButton.disabled = false;
    const error = answer.error || {};
    if (r.status === 422 && Array.isArray(error.fields) && error.fields.length) {
      const errors = {};
      for (const f of error.fields) if (API_FIELD[f.field]) errors[API_FIELD[f.field]] = f.problem;
      if (showErrors(errors)) $("form-error").textContent = error.message || "Please check your details.";
      return;
    }
    if (r.status === 409 || (r.status === 422 && hold)) {
      const lost = hold;
      await release();
      holdBox.hidden = true;
      confirmButton.disabled = true;
      markPicked();
      const extra = lost ? await offerAlternatives(lost.slotId, lost.startsAt) : "";
      $("form-error").textContent = "Sorry, that time is no longer available. Your details are kept: pick another time above.";
      say("That time is no longer available. " + extra, "error");
      await refreshTimes();
      return;
    }
    $("form-error").textContent = error.message || "Something went wrong. Your details are kept: please try again.";
  });

  restoreForm();
})();
