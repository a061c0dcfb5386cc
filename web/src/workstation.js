// Every workstation page: its stylesheet, htmx with the CSRF token, and the session-timeout
// warning (shown `data-warn` seconds before the session ends; "stay signed in" renews it).
import "./workstation.css";
import htmx from "htmx.org";

window.htmx = htmx;
// No eval (hx-on, js: values), no inline <style> for indicators: the CSP allows neither.
htmx.config.allowEval = false;
htmx.config.includeIndicatorStyles = false;
htmx.config.allowScriptTags = false;

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

document.addEventListener("htmx:configRequest", (event) => {
  event.detail.headers["X-CSRF-Token"] = csrfToken();
});

// The in-person fields matter only for the in-person way: shown with it.
function syncMode(form) {
  const chosen = form.querySelector('input[name="mode"]:checked');
  const box = form.querySelector(".in-person");
  if (!box || !chosen) return;
  const inPerson = chosen.value === "in_person";
  box.hidden = !inPerson;
  for (const input of box.querySelectorAll("input")) input.required = inPerson;
}
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLInputElement && target.name === "mode" && target.form) {
    syncMode(target.form);
  }
});
for (const form of document.querySelectorAll(".ask-form")) syncMode(form);

// -- session timeout -------------------------------------------------------------------
const body = document.body;
let expires = Number(body.dataset.expires || 0) * 1000;
const warnMs = Number(body.dataset.warn || 300) * 1000;
const dialog = document.getElementById("timeout");
const left = document.getElementById("timeout-left");
const stay = document.getElementById("timeout-stay");

function tick() {
  if (!expires || !dialog) return;
  const remaining = expires - Date.now();
  if (remaining <= 0) {
    window.location.assign("/workstation/signin?next=" +
      encodeURIComponent(window.location.pathname + window.location.search));
    return;
  }
  if (remaining <= warnMs) {
    if (dialog.hidden) {
      dialog.hidden = false;
      stay?.focus();
    }
    const s = Math.ceil(remaining / 1000);
    if (left) left.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  } else if (!dialog.hidden) {
    dialog.hidden = true;
  }
}

stay?.addEventListener("click", async () => {
  const answer = await fetch("/workstation/session/renew", {
    method: "POST", credentials: "same-origin",
    headers: { "X-CSRF-Token": csrfToken() },
  });
  if (answer.ok) {
    expires = (await answer.json()).expires * 1000;
    dialog.hidden = true;
  } else {
    window.location.assign("/workstation/signin");
  }
});

if (expires && dialog) {
  tick();
  setInterval(tick, 1000);
}
