// Progressive enhancement only: every page works without this file.
"use strict";

// Put a dropped or pasted image into a file input, so the ordinary form post carries it.
function acceptImages(zone, input, preview) {
  function take(files) {
    const images = Array.from(files).filter((f) => f.type.startsWith("image/"));
    if (!images.length) return;
    const transfer = new DataTransfer();
    (input.multiple ? images : images.slice(0, 1)).forEach((f) => transfer.items.add(f));
    input.files = transfer.files;
    input.dispatchEvent(new Event("change"));
  }
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); take(e.dataTransfer.files); });
  if (preview) {
    document.addEventListener("paste", (e) => { if (e.clipboardData) take(e.clipboardData.files); });
    input.addEventListener("change", () => {
      if (input.files.length) { preview.src = URL.createObjectURL(input.files[0]); preview.hidden = false; }
      else { preview.hidden = true; }
    });
  }
}

const IMAGE_NAME = /\.(jpe?g|png|webp|gif|bmp|tiff?)$/i;
const isImage = (f) => f.type.startsWith("image/") || IMAGE_NAME.test(f.name);
const nameOf = (f) => f.webkitRelativePath || f.name;

// Ingest one file per request and show each item's progress and outcome as it arrives.
function enhanceIngest(form) {
  const input = form.querySelector("#files");
  const folder = form.querySelector("#folder");
  const rows = document.getElementById("outcome-rows");
  const section = document.getElementById("outcomes");
  const progress = document.getElementById("ingest-progress");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    // A folder's files keep their path inside it (webkitRelativePath): that path is the asset id.
    const files = [...Array.from(input.files), ...Array.from(folder.files).filter(isImage)];
    if (!files.length) return;
    section.hidden = false;
    rows.textContent = "";
    const cells = files.map((f) => {
      const tr = rows.insertRow();
      tr.insertCell().textContent = nameOf(f);
      const state = tr.insertCell(); state.textContent = "queued";
      const details = tr.insertCell();
      return { tr, state, details };
    });
    let stored = 0;
    for (let i = 0; i < files.length; i++) {
      const data = new FormData();
      ["csrf", "license", "tags", "caption"].forEach((n) => data.append(n, form.elements[n].value));
      data.append("files", files[i], nameOf(files[i]));
      cells[i].state.textContent = "uploading";
      progress.textContent = `${i} of ${files.length} done, uploading ${nameOf(files[i])}`;
      try {
        const reply = await fetch("/ingest", { method: "POST", body: data, headers: { Accept: "application/json" }, credentials: "same-origin" });
        const body = await reply.json();
        if (!reply.ok) throw new Error(body.error || reply.statusText);
        for (const item of body.items) {
          cells[i].state.textContent = item.outcome;
          cells[i].details.textContent = item.details;
          cells[i].tr.className = item.ok ? "ok" : "bad";
          if (item.ok) {
            stored++;
            const link = document.createElement("a");
            link.href = "/asset/" + encodeURI(item.asset_id);
            link.textContent = item.asset_id;
            cells[i].tr.cells[0].replaceChildren(link);
          }
        }
      } catch (err) {
        cells[i].state.textContent = "failed";
        cells[i].details.textContent = String(err.message || err);
        cells[i].tr.className = "bad";
      }
    }
    progress.textContent = `${stored} of ${files.length} stored`;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const searchZone = document.getElementById("drop-zone");
  if (searchZone) acceptImages(searchZone, document.getElementById("image"), document.getElementById("image-preview"));
  const ingestForm = document.getElementById("ingest-form");
  if (ingestForm) {
    acceptImages(document.getElementById("ingest-drop"), document.getElementById("files"), null);
    enhanceIngest(ingestForm);
  }
});
