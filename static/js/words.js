// Word explorer: ask the server to learn word vectors for the chosen collection, then watch the
// request until it succeeds (the page reloads) or fails (the reason is shown).
(function () {
  "use strict";
  const button = document.getElementById("train-words");
  if (!button) return;
  const status = document.getElementById("train-status");
  const collection = button.dataset.collection;
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];

  function reason(body, code) {
    const error = body && body.error;
    return error ? error.message : "Could not start (" + code + ").";
  }

  async function watch() {
    const resp = await fetch("/api/v1/words/train/?collection=" + encodeURIComponent(collection),
                             { credentials: "same-origin" });
    if (!resp.ok) { status.textContent = reason(await resp.json().catch(() => null), resp.status); return; }
    const run = await resp.json();
    status.dataset.status = run.status;
    if (run.status === "succeeded") { window.location.reload(); return; }
    if (run.status === "failed") {
      status.textContent = "Learning word vectors failed: " + run.reason;
      button.disabled = false;
      return;
    }
    status.textContent = "Learning word vectors (" + run.status + ")…";
    window.setTimeout(watch, 2000);
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    const resp = await fetch("/api/v1/words/train/", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({ collection: collection }),
    });
    if (resp.status === 202) { status.textContent = "Learning word vectors (queued)…"; window.setTimeout(watch, 1000); return; }
    status.textContent = reason(await resp.json().catch(() => null), resp.status);
    status.dataset.status = "refused";
    button.disabled = false;
  });
  if (button.dataset.watch) watch();
})();
