// Search page, caption page and image-page extras. Loaded as a file (CSP: no inline scripts).
(function () {
  "use strict";

  // htmx drops 4xx/5xx responses by default; our partials carry a readable message: show it.
  document.body.addEventListener("htmx:beforeSwap", function (e) {
    const status = e.detail.xhr.status;
    if (status >= 400 && status < 600 && e.detail.xhr.responseText) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  // A drop zone that fills a file input (click, Enter/Space, or drag and drop) and previews it.
  function dropZone(zoneId, inputId, previewId, onChange) {
    const zone = document.getElementById(zoneId);
    const input = document.getElementById(inputId);
    if (!zone || !input) return;
    const preview = document.getElementById(previewId);
    // A file the browser cannot decode would show the broken-image icon: hide the preview instead
    // (the server's answer says what is wrong with the file).
    if (preview) preview.addEventListener("error", () => { if (preview.getAttribute("src")) preview.hidden = true; });
    function show() {
      const file = input.files && input.files[0];
      if (preview) {
        if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
        if (file) { preview.dataset.url = URL.createObjectURL(file); preview.src = preview.dataset.url; }
      }
      if (onChange) onChange(Boolean(file));
    }
    zone.addEventListener("click", () => input.click());
    zone.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
    });
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      if (!e.dataTransfer.files.length) return;
      input.files = e.dataTransfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
    input.addEventListener("change", show);
  }

  // --- search page ---------------------------------------------------------------------------
  const list = document.getElementById("term-list");
  const template = document.getElementById("term-template");
  function addTerm(weight) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.querySelector("input[name=t_weight]").value = weight;
    list.appendChild(row);
    row.querySelector("input[name=t_text]").focus();
  }
  if (list && template) {
    document.getElementById("term-add").addEventListener("click", () => addTerm("1"));
    document.getElementById("term-subtract").addEventListener("click", () => addTerm("-1"));
    list.addEventListener("click", (e) => {
      const button = e.target.closest(".term-remove");
      if (!button) return;
      button.closest(".term").remove();
      const form = document.getElementById("search-form");
      if (form) form.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }
  const chosen = document.getElementById("search-image-chosen");
  dropZone("search-drop", "search-image", "search-preview", (has) => { if (chosen) chosen.hidden = !has; });
  const clear = document.getElementById("search-image-clear");
  if (clear) {
    clear.addEventListener("click", () => {
      const input = document.getElementById("search-image");
      input.value = "";
      chosen.hidden = true;
      input.dispatchEvent(new Event("change", { bubbles: true }));
      document.getElementById("search-drop").focus();
    });
  }

  // --- caption page --------------------------------------------------------------------------
  dropZone("caption-drop", "caption-image", "caption-preview", (has) => {
    const preview = document.getElementById("caption-preview");
    if (preview) preview.hidden = !has;
  });

  // --- image page: heatmap of a text query over the image ------------------------------------
  const extras = document.getElementById("search-extras");
  const explainForm = document.getElementById("explain-form");
  if (!extras || !explainForm) return;
  const status = document.getElementById("explain-status");
  const img = document.querySelector(".main-image img");

  function overlay() {
    if (!img) return null;
    let wrap = img.parentElement;
    if (!wrap.classList.contains("heatmap-wrap")) {
      wrap = document.createElement("div");
      wrap.className = "heatmap-wrap";
      img.parentElement.insertBefore(wrap, img);
      wrap.appendChild(img);
    }
    let canvas = wrap.querySelector("canvas");
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.setAttribute("aria-hidden", "true");
      wrap.appendChild(canvas);
    }
    return canvas;
  }

  function draw(body) {
    const canvas = overlay();
    if (!canvas) return;
    const rows = body.rows, cols = body.cols;
    const span = (body.max - body.min) || 1;
    const cells = document.createElement("canvas");
    cells.width = cols; cells.height = rows;
    const ctx = cells.getContext("2d");
    const data = ctx.createImageData(cols, rows);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const t = (body.grid[r][c] - body.min) / span;  // 0 = weakest region, 1 = strongest
        const i = 4 * (r * cols + c);
        data.data[i] = 255; data.data[i + 1] = Math.round(220 * (1 - t)); data.data[i + 2] = 0;
        data.data[i + 3] = Math.round(40 + 200 * t);
      }
    }
    ctx.putImageData(data, 0, 0);
    canvas.width = img.naturalWidth || img.width;
    canvas.height = img.naturalHeight || img.height;
    const out = canvas.getContext("2d");
    out.imageSmoothingEnabled = true;
    out.clearRect(0, 0, canvas.width, canvas.height);
    out.drawImage(cells, 0, 0, canvas.width, canvas.height);
  }

  async function explain(q) {
    if (!q) return;
    status.textContent = "Computing heatmap…";
    const url = extras.dataset.explainUrl + "?q=" + encodeURIComponent(q);
    try {
      const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const body = await resp.json();
      if (!resp.ok) { status.textContent = (body.error && body.error.message) || "Heatmap unavailable."; return; }
      draw(body);
      status.textContent = "Red marks the regions that match “" + q + "” best (image score " + body.score.toFixed(3) + ").";
    } catch (err) {
      status.textContent = "Heatmap unavailable: " + err.message;
    }
  }

  explainForm.addEventListener("submit", (e) => {
    e.preventDefault();
    explain(document.getElementById("explain-q").value.trim());
  });
  const initial = document.getElementById("explain-q").value.trim();
  if (initial) {
    if (img && !img.complete) img.addEventListener("load", () => explain(initial), { once: true });
    else explain(initial);
  }
})();
