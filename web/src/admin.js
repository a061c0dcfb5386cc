// The operators' pages (/admin): the desk stylesheet, htmx, and the CSRF token on every
// htmx request. No inline handlers or eval: the CSP forbids them.
import "./admin.css";
import htmx from "htmx.org";

window.htmx = htmx;
htmx.config.allowEval = false;
htmx.config.includeIndicatorStyles = false;
htmx.config.allowScriptTags = false;

document.addEventListener("htmx:configRequest", (event) => {
  const token = document.querySelector('meta[name="csrf-token"]');
  if (token) event.detail.headers["X-CSRF-Token"] = token.content;
});

// Filters (hospital, month) submit on change.
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLSelectElement && target.dataset.autosubmit !== undefined) {
    target.form?.requestSubmit();
  }
});
