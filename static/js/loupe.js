// Small behaviours shared by every page (no inline handlers: the CSP forbids them).
(function () {
  "use strict";
  document.addEventListener("change", (e) => {
    const el = e.target;
    if (el.matches && el.matches("[data-autosubmit]") && el.form) el.form.submit();
  });
  // <button data-confirm="question"> asks before its form is submitted.
  document.addEventListener("submit", (e) => {
    const button = e.submitter;
    const question = button && button.getAttribute && button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) e.preventDefault();
  });
  // <details open data-fold-on-phone>: folded on a phone-width screen unless it holds active choices
  // (served open, so without scripts nothing is hidden).
  if (window.matchMedia && window.matchMedia("(max-width: 700px)").matches) {
    document.querySelectorAll("details[data-fold-on-phone]:not([data-active])").forEach((d) => { d.open = false; });
  }
  // <input data-select-on-focus>: one click selects a token for copying.
  document.addEventListener("focusin", (e) => {
    const el = e.target;
    if (el.matches && el.matches("[data-select-on-focus]")) el.select();
  });
})();
