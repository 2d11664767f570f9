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
  // <input data-select-on-focus>: one click selects a token for copying.
  document.addEventListener("focusin", (e) => {
    const el = e.target;
    if (el.matches && el.matches("[data-select-on-focus]")) el.select();
  });
})();
