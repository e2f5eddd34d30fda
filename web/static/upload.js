// Import: stream the file as the request body (XHR for upload progress), then follow the
// transcription job on the recording page.
"use strict";
(function () {
  const form = document.getElementById("upload");
  if (!form) return;
  const bar = document.getElementById("upload-progress");
  const state = document.getElementById("upload-state");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const file = form.file.files[0];
    if (!file) return;
    if (file.size > parseInt(form.dataset.max, 10)) { state.textContent = _("This file is larger than the upload limit."); return; }
    const params = new URLSearchParams({ filename: file.name, profile: form.profile.value });
    if (form.elements.namedItem("title").value.trim()) params.set("title", form.elements.namedItem("title").value.trim());
    if (form.elements.namedItem("speakers").value) params.set("speakers", form.elements.namedItem("speakers").value);
    if (form.elements.namedItem("fast").value) params.set("fast", "true");
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", "/api/upload?" + params);
    xhr.setRequestHeader("X-CSRF-Token", tingji.csrf());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = (100 * ev.loaded) / ev.total; };
    xhr.onload = () => {
      let data = {};
      try { data = JSON.parse(xhr.responseText); } catch (err) { data = {}; }
      if (xhr.status === 200) { state.textContent = _("Uploaded: transcribing…"); location.href = "/recordings/" + data.recording_id; }
      else { state.textContent = _("Not imported: %(reason)s", { reason: data.detail || xhr.status }); form.querySelector("button").disabled = false; }
    };
    xhr.onerror = () => { state.textContent = _("The upload failed (connection lost)."); form.querySelector("button").disabled = false; };
    bar.hidden = false;
    form.querySelector("button").disabled = true;
    state.textContent = _("Uploading…");
    xhr.send(file);
  });
})();
