// The Record page: start/pause/marker/stop, a level meter and the live transcript, fed by
// the server's event stream (/api/record/events).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("record-form");
  if (!form) return;
  const buttons = { start: $("rec-start"), pause: $("rec-pause"), marker: $("rec-marker"), stop: $("rec-stop") };
  const state = $("rec-state"), live = $("live"), meter = $("rec-level"), clock = $("rec-clock");
  let paused = false;
  const note = document.createElement("span");  // marker messages, beside the state
  note.className = "muted";
  state.after(note);

  function show(status) {
    if (status.state === "busy") {  // someone else's recording: nothing of it is shown
      Object.values(buttons).forEach((b) => { b.disabled = true; });
      state.textContent = status.message || "The box is recording for someone else.";
      clock.textContent = "0:00";
      return;
    }
    const active = status.state === "recording" || status.state === "paused";
    buttons.start.disabled = active;
    buttons.pause.disabled = buttons.marker.disabled = buttons.stop.disabled = !active;
    paused = status.state === "paused";
    buttons.pause.textContent = paused ? "Resume" : "Pause";
    if (status.seconds !== undefined) clock.textContent = tingji.clock(status.seconds);
    if (!active) { clock.textContent = tingji.clock(status.seconds || 0); note.textContent = ""; }
    state.textContent = active ? (paused ? "Paused" : "Recording…") : (status.stop_reason || "");
  }

  async function call(action, body) {
    const r = await tingji.api("POST", `/api/record/${action}`, body);
    if (!r.ok) { state.textContent = (r.data && r.data.detail) || `failed (${r.status})`; return null; }
    return r.data;
  }

  buttons.start.addEventListener("click", async () => {
    live.textContent = "";
    const speakers = form.elements.namedItem("speakers").value;
    const data = await call("start", { title: form.elements.namedItem("title").value || null, source: form.source.value, profile: form.profile.value, speakers: speakers ? parseInt(speakers, 10) : null });
    if (data) show(data);
  });
  buttons.pause.addEventListener("click", async () => { const d = await call(paused ? "resume" : "pause"); if (d) show(d); });
  buttons.marker.addEventListener("click", async () => {
    const note = prompt("Marker note (optional):", "");
    if (note === null) return;
    const m = await call("marker", { note });
    if (m) note.textContent = ` · marker at ${tingji.clock(m.t)}`;
  });
  buttons.stop.addEventListener("click", async () => {
    buttons.stop.disabled = true;
    state.textContent = "Stopping…";
    const data = await call("stop");
    if (data) { state.textContent = "Saved: transcribing…"; location.href = "/recordings/" + data.recording_id; }
  });

  const events = new EventSource("/api/record/events");
  events.addEventListener("status", (e) => show(JSON.parse(e.data)));
  events.addEventListener("state", (e) => {
    const ev = JSON.parse(e.data);
    show({ state: ev.state === "stopped" ? "idle" : ev.state, stop_reason: ev.reason });
  });
  events.addEventListener("level", (e) => {
    const ev = JSON.parse(e.data);
    meter.style.width = Math.max(0, Math.min(100, ((ev.peak_db + 60) / 60) * 100)) + "%";
    clock.textContent = tingji.clock(ev.seconds);
  });
  events.addEventListener("segment", (e) => {
    const ev = JSON.parse(e.data);
    const li = document.createElement("li");
    const t = document.createElement("span");
    t.className = "time";
    t.textContent = tingji.clock(ev.start) + " ";
    li.append(t, ev.text);
    live.append(li);
    li.scrollIntoView({ block: "nearest" });
  });
  events.addEventListener("marker", (e) => { note.textContent = ` · marker at ${tingji.clock(JSON.parse(e.data).t)}`; });
})();
