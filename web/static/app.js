// tingji: shared helpers.  api() sends JSON with the session's CSRF token; _() says a message
// in the page's language, from the catalogue the page carries (web/i18n.py).
"use strict";
const pageMessages = JSON.parse(document.getElementById("messages")?.textContent || "{}");
window._ = (message, params = {}) =>
  (pageMessages[message] || message).replace(/%\((\w+)\)[sd]/g, (all, name) => String(params[name]));
window.tingji = {
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },
  async api(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", "X-CSRF-Token": tingji.csrf() },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    return { ok: response.ok, status: response.status, data };
  },
  clock(t) {
    t = Math.max(0, Math.floor(t));
    return Math.floor(t / 60) + ":" + String(t % 60).padStart(2, "0");
  },
  // Poll a job until it ends; onProgress(job) on every answer.  Stops after maxSeconds.
  async watchJob(jobId, onProgress, maxSeconds = 6 * 3600) {
    const until = Date.now() + maxSeconds * 1000;
    while (Date.now() < until) {
      const { ok, data } = await tingji.api("GET", `/api/jobs/${jobId}`);
      if (ok) {
        onProgress(data);
        if (!["queued", "running"].includes(data.status)) return data;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    return null;
  },
};

// Forms that ask before they act (data-confirm), and the job queue's cancel buttons: here,
// not in the pages, so no page needs inline script.
document.addEventListener("submit", (e) => {
  const form = e.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) e.preventDefault();
});
document.addEventListener("click", async (e) => {
  const button = e.target.closest(".cancel-job");
  if (!button) return;
  await tingji.api("POST", `/api/jobs/${button.dataset.job}/cancel`);
  location.reload();
});
