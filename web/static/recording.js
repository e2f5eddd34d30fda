// The recording page: player ↔ transcript sync, click a word to seek, keyboard shortcuts,
// inline editing with autosave (409 → show the newer text), speakers, split/merge,
// find & replace, history with undo, the summary panel and job progress.
"use strict";
(function () {
  const root = document.getElementById("recording");
  const renameForm = document.getElementById("rename-recording");
  if (renameForm) renameForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/title`, { title: renameForm.elements.namedItem("title").value });
    if (r.ok) document.getElementById("title").textContent = r.data.title;
    else alert((r.data && r.data.detail) || _("failed (%(status)s)", { status: r.status }));
  });
  const deleteButton = document.getElementById("delete-recording");
  if (deleteButton) deleteButton.addEventListener("click", async () => {
    if (!confirm(_("Delete “%(title)s” with its audio, transcript and summary? This cannot be undone.", { title: deleteButton.dataset.title }))) return;
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/delete`);
    if (r.ok) location.href = "/";
    else alert((r.data && r.data.detail) || _("failed (%(status)s)", { status: r.status }));
  });
  if (!root) return;
  const recordingId = root.dataset.id;
  const canEdit = root.dataset.canEdit === "true";
  const player = document.getElementById("player");
  const transcript = document.getElementById("transcript");
  const saveState = document.getElementById("save-state");
  const conflictBox = document.getElementById("conflict");
  const segments = () => Array.from(transcript.querySelectorAll(".segment"));
  let editing = null;

  // -- words -----------------------------------------------------------------------------
  // Each recognised word becomes a span with its times (click to seek, highlighted while
  // playing).  Words are found in the stored text, which may differ (punctuation, numbers,
  // edits): a word not found within a few characters stays plain text.
  function wrapWords(seg, words) {
    const text = seg.querySelector(".text");
    const source = text.textContent;
    const pieces = document.createDocumentFragment();
    let position = 0;
    const unsureBelow = parseFloat(transcript.dataset.unsureBelow || "0");
    const reviewed = seg.dataset.revision !== "0";  // a reviewer's text: no marks
    for (const [start, end, raw, probability] of words) {
      const token = raw.trim();
      const found = token ? source.indexOf(token, position) : -1;
      if (found < 0 || found - position > 12) continue;
      pieces.append(source.slice(position, found));
      const span = document.createElement("span");
      span.className = "w";
      if (!reviewed && probability !== null && probability < unsureBelow) {
        span.classList.add("unsure");
        span.title = _("The recogniser was unsure of this word");
      }
      span.dataset.start = start.toFixed(2);
      span.dataset.end = end.toFixed(2);
      span.textContent = token;
      pieces.append(span);
      position = found + token.length;
    }
    pieces.append(source.slice(position));
    text.replaceChildren(pieces);
  }
  const wordData = JSON.parse(document.getElementById("words").textContent || "{}");
  const tools = document.getElementById("seg-tools");  // a reviewer's: split, merge, confirm
  for (const seg of transcript.querySelectorAll(".segment")) {
    if (wordData[seg.dataset.id]) wrapWords(seg, wordData[seg.dataset.id]);
    if (!tools) continue;
    const own = tools.content.firstElementChild.cloneNode(true);
    const marked = seg.matches(".unsure") || seg.querySelector(".w.unsure");
    if (seg.dataset.revision !== "0" || !marked) own.querySelector(".confirm").remove();  // offered where something is marked
    seg.append(own);
  }

  // -- player sync ---------------------------------------------------------------------
  function seek(t, play = true) {
    if (!player) return;
    player.currentTime = Math.max(0, t);
    if (play) player.play().catch(() => {});
  }
  let current = null, currentWord = null;
  function sync() {
    const t = player.currentTime;
    const list = segments();
    let lo = 0, hi = list.length - 1, found = null;
    while (lo <= hi) {  // last segment starting at or before t
      const mid = (lo + hi) >> 1;
      if (parseFloat(list[mid].dataset.start) <= t) { found = list[mid]; lo = mid + 1; } else hi = mid - 1;
    }
    if (found && t > parseFloat(found.dataset.end) + 0.5) found = null;
    if (found !== current) {
      if (current) current.classList.remove("current");
      if (found) {
        found.classList.add("current");
        if (!editing) found.scrollIntoView({ block: "nearest", behavior: "smooth" });
      }
      current = found;
    }
    let word = null;
    if (found) {
      for (const w of found.querySelectorAll(".w")) {
        if (parseFloat(w.dataset.start) <= t && t < parseFloat(w.dataset.end)) { word = w; break; }
      }
    }
    if (word !== currentWord) {
      if (currentWord) currentWord.classList.remove("now");
      if (word) word.classList.add("now");
      currentWord = word;
    }
  }
  if (player) {
    player.addEventListener("timeupdate", sync);
    player.addEventListener("seeked", sync);
    if (root.dataset.startAt) {
      player.addEventListener("loadedmetadata", () => seek(parseFloat(root.dataset.startAt), false), { once: true });
    }
    document.getElementById("speed").addEventListener("change", (e) => { player.playbackRate = parseFloat(e.target.value); });
  }

  // -- the timeline strip: click to play from there; the cursor follows playback --------
  const strip = document.querySelector("svg.strip:not(.mini)");
  if (strip && player) {
    const duration = parseFloat(strip.dataset.duration) || 1;
    const cursor = document.getElementById("strip-cursor");
    strip.addEventListener("click", (e) => {
      const box = strip.getBoundingClientRect();
      seek(Math.max(0, (e.clientX - box.left) / box.width) * duration, true);
    });
    const move = () => {
      const x = String(Math.min(player.currentTime / duration, 1) * 1000);
      cursor.setAttribute("x1", x); cursor.setAttribute("x2", x);
    };
    player.addEventListener("timeupdate", move);
    player.addEventListener("seeked", move);
  }

  document.addEventListener("click", (e) => {
    const target = e.target.closest("[data-seek], .w, [data-cite]");
    if (!target || (editing && editing.contains(target))) return;
    if (target.dataset.cite) {
      const seg = document.getElementById("seg-" + target.dataset.cite);
      if (seg) { e.preventDefault(); seg.scrollIntoView({ block: "center" }); seek(parseFloat(seg.dataset.start)); flash(seg); }
      return;
    }
    seek(parseFloat(target.dataset.seek !== undefined ? target.dataset.seek : target.dataset.start));
  });
  function flash(el) { el.classList.add("flash"); setTimeout(() => el.classList.remove("flash"), 1500); }

  document.addEventListener("keydown", (e) => {
    if (!player || editing || e.target.closest("input, textarea, select, [contenteditable=true]")) return;
    if ((e.key === " " || e.key === "Enter") && e.target.closest("button, a, summary, audio")) return;  // the control's own key
    const list = segments();
    const index = current ? list.indexOf(current) : -1;
    if (e.key === " " || e.key === "k") { e.preventDefault(); player.paused ? player.play() : player.pause(); }
    else if (e.key === "ArrowLeft" || e.key === "j") { seek(player.currentTime - 5, !player.paused); }
    else if (e.key === "ArrowRight" || e.key === "l") { seek(player.currentTime + 5, !player.paused); }
    else if (e.key === "n" && index + 1 < list.length) { seek(parseFloat(list[index + 1].dataset.start)); }
    else if (e.key === "p" && index > 0) { seek(parseFloat(list[index - 1].dataset.start)); }
    else if (e.key === "u") { nextUnsure(); }
    else if (e.key === "?") { const help = document.getElementById("shortcuts"); help.hidden = !help.hidden; }
    else if (e.key === "Escape") { document.getElementById("shortcuts").hidden = true; }
  });
  // the next passage or word the recogniser was unsure of, after the one playing: check those first
  function nextUnsure() {
    const t = player.currentTime + 0.05;
    const marks = [...document.querySelectorAll(".segment.unsure, .segment .w.unsure")];
    const start = (el) => parseFloat(el.dataset.start);
    const next = marks.filter((el) => start(el) > t).sort((a, b) => start(a) - start(b))[0]
      || marks.sort((a, b) => start(a) - start(b))[0];  // from the top again
    if (!next) return;
    const seg = next.closest(".segment");
    seg.scrollIntoView({ block: "center" });
    flash(seg);
    seek(start(next), false);
  }

  // -- keeping: the transcript confirmed (retention counts from then), legal hold ---------
  const reviewedButton = document.getElementById("reviewed");
  if (reviewedButton) reviewedButton.addEventListener("click", async () => {
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/reviewed`, { reviewed: reviewedButton.dataset.reviewed !== "true" });
    r.ok ? location.reload() : alert((r.data && r.data.detail) || _("failed (%(status)s)", { status: r.status }));
  });
  const retranscribe = document.getElementById("retranscribe");
  if (retranscribe) retranscribe.addEventListener("click", async () => {
    retranscribe.disabled = true;
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/transcribe`);
    r.ok ? location.reload() : alert((r.data && r.data.detail) || _("failed (%(status)s)", { status: r.status }));
  });
  const holdForm = document.getElementById("hold"), release = document.getElementById("release-hold");
  async function hold(reason) {
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/hold`, { reason });
    r.ok ? location.reload() : alert((r.data && r.data.detail) || _("failed (%(status)s)", { status: r.status }));
  }
  if (holdForm) holdForm.addEventListener("submit", (e) => { e.preventDefault(); hold(holdForm.elements.namedItem("reason").value); });
  if (release) release.addEventListener("click", () => hold(null));

  // -- editing -------------------------------------------------------------------------
  function status(text, kind = "") { saveState.textContent = text; saveState.className = "save-state " + kind; }

  function render(seg, data, withText = true) {  // the stored segment, new revision
    seg.dataset.revision = data.revision;
    seg.dataset.start = data.start; seg.dataset.end = data.end;
    if (withText) seg.querySelector(".text").textContent = data.text;
    const sp = seg.querySelector(".speaker");
    sp.textContent = data.speaker || _("speaker?");
    sp.classList.toggle("none", !data.speaker);
  }

  function showConflict(seg, mine, body) {
    const newer = (body && body.current && body.current[0]) || null;
    conflictBox.hidden = false;
    conflictBox.textContent = "";
    const p = document.createElement("p");
    p.textContent = (body && body.detail) || _("Someone else changed this segment.");
    const yours = document.createElement("p");
    yours.className = "yours";
    yours.textContent = _("Your text (not saved): %(text)s", { text: mine });
    conflictBox.append(p, yours);
    if (newer) render(seg, newer);
    status(_("conflict: the newer text is shown"), "bad");
  }

  async function save(seg) {
    const text = seg.querySelector(".text").innerText.trim();
    if (seg.dataset.saved === text) return;
    status(_("saving…"));
    const { ok, status: code, data } = await tingji.api("PATCH", `/api/segments/${seg.dataset.id}`,
      { text, revision: parseInt(seg.dataset.revision, 10) });
    if (ok) { render(seg, data); seg.dataset.saved = data.text; status(_("saved"), "good"); refreshHistory(); }
    else if (code === 409) showConflict(seg, text, data);
    else status(_("not saved: %(reason)s", { reason: (data && data.detail) || code }), "bad");
  }

  let timer = null;
  function startEdit(seg) {
    if (!canEdit || editing === seg) return;
    if (editing) stopEdit();
    editing = seg;
    const text = seg.querySelector(".text");
    seg.dataset.saved = text.innerText.trim();
    text.contentEditable = "true";
    seg.classList.add("editing");
    text.focus();
  }
  async function stopEdit() {
    const seg = editing;
    if (!seg) return;
    clearTimeout(timer);
    editing = null;
    seg.querySelector(".text").contentEditable = "false";
    seg.classList.remove("editing");
    await save(seg);
  }
  if (canEdit) {
    transcript.addEventListener("dblclick", (e) => {
      const seg = e.target.closest(".segment");
      if (seg && e.target.closest(".text")) startEdit(seg);
    });
    transcript.addEventListener("input", (e) => {
      const seg = e.target.closest(".segment");
      if (!seg) return;
      status(_("editing…"));
      clearTimeout(timer);
      timer = setTimeout(() => save(seg), 1500);  // autosave while typing
    });
    transcript.addEventListener("focusout", (e) => {
      if (editing && e.target.closest(".segment") === editing && !editing.contains(e.relatedTarget)) stopEdit();
    });
    transcript.addEventListener("keydown", (e) => {
      if (editing && (e.key === "Escape" || (e.key === "Enter" && !e.shiftKey))) { e.preventDefault(); stopEdit(); }
      else if (!editing && e.key === "Enter" && e.target.matches(".segment .text")) {  // the keyboard's double-click
        e.preventDefault(); startEdit(e.target.closest(".segment"));
      }
    });
    transcript.addEventListener("click", async (e) => {
      const seg = e.target.closest(".segment");
      if (!seg) return;
      if (e.target.closest(".speaker")) {  // pick it; the Tools card assigns a speaker
        const picked = seg.classList.toggle("picked");
        seg.querySelector(".speaker").setAttribute("aria-pressed", String(picked));
        document.getElementById("picked-count").textContent = transcript.querySelectorAll(".segment.picked").length;
      } else if (e.target.closest(".confirm")) {  // the text stands: the marks go
        const r = await tingji.api("POST", `/api/segments/${seg.dataset.id}/confirm`, { revision: parseInt(seg.dataset.revision, 10) });
        if (!r.ok) { status(_("not confirmed: %(reason)s", { reason: (r.data && r.data.detail) || r.status }), "bad"); return; }
        seg.dataset.revision = r.data.revision;
        seg.classList.remove("unsure");
        seg.removeAttribute("title");
        seg.querySelectorAll(".w.unsure").forEach((w) => { w.classList.remove("unsure"); w.removeAttribute("title"); });
        e.target.closest(".confirm").remove();
        status(_("confirmed"), "good"); refreshHistory();
      } else if (e.target.closest(".split")) {
        const sel = window.getSelection();
        const text = seg.querySelector(".text");
        let position = 0;
        if (sel.rangeCount && text.contains(sel.anchorNode)) {
          const range = document.createRange();
          range.selectNodeContents(text);
          range.setEnd(sel.anchorNode, sel.anchorOffset);
          position = range.toString().length;
        }
        if (!position) { status(_("put the cursor where the segment should split (double-click the text first)"), "bad"); return; }
        if (editing) { await stopEdit(); }
        const r = await tingji.api("POST", `/api/segments/${seg.dataset.id}/split`, { position, revision: parseInt(seg.dataset.revision, 10) });
        r.ok ? location.reload() : status(_("not split: %(reason)s", { reason: r.data && r.data.detail }), "bad");
      } else if (e.target.closest(".merge")) {
        const next = seg.nextElementSibling;
        if (!next) return;
        const r = await tingji.api("POST", `/api/segments/${seg.dataset.id}/merge`, { revision: parseInt(seg.dataset.revision, 10), next_revision: parseInt(next.dataset.revision, 10) });
        r.ok ? location.reload() : status(_("not merged: %(reason)s", { reason: r.data && r.data.detail }), "bad");
      }
    });

    for (const [id, url, body] of [
      ["rename-speaker", `/api/recordings/${recordingId}/speakers/rename`, (f) => ({ old: f.old.value, new: f.new.value })],
      ["replace", `/api/recordings/${recordingId}/replace`, (f) => ({ find: f.find.value, replace: f.replace.value })],
    ]) {
      const form = document.getElementById(id);
      if (!form) continue;
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const r = await tingji.api("POST", url, body(form));
        if (r.ok && r.data.changed) location.reload();
        else status(r.ok ? _("nothing changed") : _("failed: %(reason)s", { reason: r.data && r.data.detail }), r.ok ? "" : "bad");
      });
    }
  }

  // -- history -------------------------------------------------------------------------
  const history = document.getElementById("history");
  async function refreshHistory() {
    if (!history || !history.open) return;
    const { ok, data } = await tingji.api("GET", `/api/recordings/${recordingId}/revisions?limit=100`);
    if (!ok) return;
    const list = document.getElementById("revisions");
    list.textContent = "";
    for (const rev of data) {
      const li = document.createElement("li");
      const when = rev.created.slice(0, 19).replace("T", " ");
      const change = rev.kind === "edit" && rev.before.length === 1
        ? `: “${rev.before[0].text}” → “${rev.after[0].text}”` : "";
      li.textContent = `${when} ${rev.username || _("system")} ${rev.note}${change} `;
      if (rev.undone_by) li.classList.add("undone");
      else {
        const undo = document.createElement("button");
        undo.textContent = _("undo");
        undo.addEventListener("click", async () => {
          const r = await tingji.api("POST", `/api/revisions/${rev.id}/undo`);
          r.ok ? location.reload() : status(_("cannot undo: %(reason)s", { reason: r.data && r.data.detail }), "bad");
        });
        li.append(undo);
      }
      list.append(li);
    }
  }
  if (history) history.addEventListener("toggle", refreshHistory);

  // -- summary -------------------------------------------------------------------------
  const summarize = document.getElementById("summarize");
  if (summarize) summarize.addEventListener("click", async () => {
    summarize.disabled = true;
    const r = await tingji.api("POST", `/api/recordings/${recordingId}/summarize`, {});
    if (!r.ok) { status(_("cannot summarise: %(reason)s", { reason: r.data && r.data.detail }), "bad"); summarize.disabled = false; return; }
    location.reload();  // the page shows the job: progress, what it is doing, Cancel
  });
  const cancelSummary = document.getElementById("cancel-summary");
  if (cancelSummary) cancelSummary.addEventListener("click", async () => {
    cancelSummary.disabled = true;
    const r = await tingji.api("POST", `/api/recordings/${recordingId}/summarize/cancel`, {});
    r.ok ? location.reload() : status(_("not cancelled: %(reason)s", { reason: (r.data && r.data.detail) || r.status }), "bad");
  });
  const editSummary = document.getElementById("edit-summary");
  const saveSummary = document.getElementById("save-summary");
  const body = document.getElementById("summary-body");
  if (editSummary && body) {
    editSummary.addEventListener("click", () => {
      body.querySelectorAll("[data-field], [data-item]").forEach((el) => { el.contentEditable = "true"; });
      body.classList.add("editing");
      editSummary.hidden = true; saveSummary.hidden = false;
    });
    saveSummary.addEventListener("click", async () => {
      const content = {};
      body.querySelectorAll("[data-field]").forEach((el) => { content[el.dataset.field] = el.innerText.trim(); });
      const lists = {};
      body.querySelectorAll("[data-list]").forEach((ul) => {
        lists[ul.dataset.list] = Array.from(ul.querySelectorAll("li")).map((li) => {
          const item = li.querySelector("[data-item]");
          return { field: item.dataset.item, value: item.innerText.trim(),
                   segments: Array.from(li.querySelectorAll("[data-cites]")).flatMap((a) => a.dataset.cites.split(",").map((id) => parseInt(id, 10))) };
        });
      });
      const current = await tingji.api("GET", `/api/recordings/${recordingId}`);
      const base = current.data.summary.content;
      for (const [key, items] of Object.entries(lists)) {
        content[key] = items.map((it, i) => ({ ...(base[key][i] || {}), [it.field]: it.value, segments: it.segments }));
      }
      const r = await tingji.api("PUT", `/api/recordings/${recordingId}/summary`, { content, version: parseInt(body.dataset.version, 10) });
      r.ok ? location.reload() : status(_("summary not saved: %(reason)s", { reason: r.data && r.data.detail }), "bad");
    });
  }

  const diarizeForm = document.getElementById("diarize");
  if (diarizeForm) diarizeForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const count = diarizeForm.elements.namedItem("speakers").value;
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/diarize`, {
      speakers: count ? parseInt(count, 10) : null,
      overwrite: diarizeForm.elements.namedItem("overwrite").checked });
    r.ok ? location.reload() : status(_("cannot find the speakers: %(reason)s", { reason: (r.data && r.data.detail) || r.status }), "bad");
  });

  const mergeForm = document.getElementById("merge-speakers");
  if (mergeForm) mergeForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/speakers/merge`, {
      speaker: mergeForm.elements.namedItem("speaker").value,
      into: mergeForm.elements.namedItem("into").value });
    r.ok ? location.reload() : status(_("not merged: %(reason)s", { reason: (r.data && r.data.detail) || r.status }), "bad");
  });

  for (const button of document.querySelectorAll(".confirm-voice")) {
    button.addEventListener("click", async () => {
      const name = button.dataset.name;
      const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/speakers/rename`, {
        old: name, new: name.replace(/[?？]+$/, "") });
      r.ok ? location.reload() : status(_("not confirmed: %(reason)s", { reason: (r.data && r.data.detail) || r.status }), "bad");
    });
  }

  const voiceForm = document.getElementById("remember-voice");
  if (voiceForm) voiceForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const field = (n) => voiceForm.elements.namedItem(n);
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/voiceprints`, {
      speaker: field("speaker").value, name: field("name").value,
      consent: field("consent").value, agreed: field("agreed").checked });
    if (!r.ok) { status(_("not remembered: %(reason)s", { reason: (r.data && r.data.detail) || r.status }), "bad"); return; }
    status(_("remembering the voice of %(name)s…", { name: field("name").value }));
    const job = await tingji.watchJob(r.data.id, () => {}, 300);  // a few seconds usually
    if (job && job.status === "done") location.reload();
    else if (job) status(_("not remembered: %(reason)s", { reason: job.error || job.status }), "bad");
    else status(_("still remembering the voice: reload the page later"), "");
  });

  const assignForm = document.getElementById("assign-speaker");
  if (assignForm) assignForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const picked = [...document.querySelectorAll(".segment.picked")];
    if (!picked.length) { status(_("pick segments first: click their speaker labels"), "bad"); return; }
    const speaker = assignForm.elements.namedItem("speaker").value;
    const segments = picked.map((seg) => ({ id: parseInt(seg.dataset.id, 10), revision: parseInt(seg.dataset.revision, 10) }));
    const r = await tingji.api("POST", `/api/recordings/${root.dataset.id}/speakers/assign`, { speaker, segments });
    if (r.ok) {
      for (const data of r.data.segments) {
        const seg = document.getElementById("seg-" + data.id);
        render(seg, data, false);
        seg.classList.remove("picked");
        seg.querySelector(".speaker").setAttribute("aria-pressed", "false");
      }
      document.getElementById("picked-count").textContent = "0";
      status(_("saved"), "good"); refreshHistory();
    } else if (r.status === 409) showConflict(picked[0], speaker, r.data);
    else status(_("not saved: %(reason)s", { reason: (r.data && r.data.detail) || r.status }), "bad");
  });

  // -- jobs ----------------------------------------------------------------------------
  for (const el of document.querySelectorAll(".head .job, .summary-job")) {
    tingji.watchJob(el.dataset.job, (job) => {
      const badge = document.querySelector(".head .status");
      if (badge && job.kind === "transcribe" && job.status === "running") {
        badge.textContent = _("transcribing");  // not "queued" while the bar moves
        badge.className = "status status-transcribing";
      }
      el.querySelector("progress").value = job.progress;
      el.querySelector(".pct").textContent = Math.round(job.progress) + "%";
      const stage = el.querySelector(".stage");
      if (stage) stage.textContent = job.stage || job.status;
    }).then(() => location.reload());
  }
})();
