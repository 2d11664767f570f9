// Upload page: one request per file so each file shows its own progress and result.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const drop = document.getElementById("dropzone");
  const input = document.getElementById("files");
  const list = document.getElementById("upload-list");
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];

  function item(name) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const bar = document.createElement("progress");
    bar.max = 100; bar.value = 0;
    const result = document.createElement("span");
    result.className = "result";
    li.append(label, bar, result);
    list.prepend(li);
    return { li, bar, result };
  }

  // A new name is created once, then becomes the selected option, so the next batch goes to it
  // without posting it again (which answered 409).
  async function ensureCollection() {
    const field = document.getElementById("new-collection");
    const select = document.getElementById("collection");
    const fresh = field.value.trim();
    if (!fresh) return select.value;
    const known = Array.from(select.options).some((o) => o.value === fresh);
    if (!known) {
      const resp = await fetch(form.dataset.collectionsEndpoint, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ name: fresh }),
      });
      if (resp.status !== 201 && resp.status !== 409) {
        const body = await resp.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || "could not create collection");
      }
      select.append(new Option(fresh, fresh));
    }
    select.value = fresh;
    field.value = "";
    return fresh;
  }

  function send(file, collection) {
    const ui = item(file.name);
    const data = new FormData();
    data.append("file", file);
    data.append("collection", collection);
    const caption = document.getElementById("caption").value;
    if (caption) data.append("caption", caption);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.endpoint);
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) ui.bar.value = (100 * e.loaded) / e.total; };
    xhr.onload = () => {
      ui.bar.value = 100;
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 201 || xhr.status === 200) {
        ui.li.className = "ok";
        const link = document.createElement("a");
        link.href = "/images/" + body.id + "/";
        link.textContent = xhr.status === 201 ? "stored" : "already present";
        ui.result.append(link);
      } else {
        ui.li.className = "error";
        ui.result.textContent = (body.error && body.error.message) || ("error " + xhr.status);
      }
    };
    xhr.onerror = () => { ui.li.className = "error"; ui.result.textContent = "network error"; };
    xhr.send(data);
  }

  async function handle(files) {
    let collection;
    try { collection = await ensureCollection(); } catch (e) { const ui = item("collection"); ui.li.className = "error"; ui.result.textContent = e.message; return; }
    Array.from(files).forEach((f) => send(f, collection));
  }

  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => handle(input.files));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handle(e.dataTransfer.files); });
})();
