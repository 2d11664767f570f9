// Word explorer: ask the server to learn word vectors for the chosen collection.
(function () {
  "use strict";
  const button = document.getElementById("train-words");
  if (!button) return;
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];
  button.addEventListener("click", async () => {
    const status = document.getElementById("train-status");
    button.disabled = true;
    const resp = await fetch("/api/v1/words/train/", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify({ collection: button.dataset.collection }),
    });
    status.textContent = resp.status === 202 ? "Learning… reload this page in a minute." : "Could not start (" + resp.status + ").";
  });
})();
