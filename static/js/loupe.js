// Small behaviours shared by every page (no inline handlers: the CSP forbids them).
(function () {
  "use strict";
  document.addEventListener("change", (e) => {
    const el = e.target;
    if (el.matches && el.matches("[data-autosubmit]") && el.form) el.form.submit();
  });
})();
