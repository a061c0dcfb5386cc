// Every portal page: the stylesheet, htmx, and the CSRF token on every htmx request.
import "./portal.css";
import htmx from "htmx.org";

window.htmx = htmx;
// No eval (hx-on, js: values), no inline <style> for indicators: the CSP allows neither.
htmx.config.allowEval = false;
htmx.config.includeIndicatorStyles = false;
htmx.config.allowScriptTags = false;

document.addEventListener("htmx:configRequest", (event) => {
  const token = document.querySelector('meta[name="csrf-token"]');
  if (token) event.detail.headers["X-CSRF-Token"] = token.content;
});

// The family switcher and filters submit on change (no inline handlers under the CSP).
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLSelectElement && target.dataset.autosubmit !== undefined) {
    target.form?.requestSubmit();
  }
});
