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
  const final = document.createElement("span");  // how far the final transcript has got
  final.className = "muted";
  final.id = "final-pass";
  note.after(final);
  function finalPass(until, notes) {
    final.textContent = (until ? " · " + _("final transcript up to %(time)s", { time: tingji.clock(until) }) : "")
      + (until && notes ? " · " + _("summary notes up to %(time)s", { time: tingji.clock(notes) }) : "");
  }

  function show(status) {
    if (status.state === "busy") {  // someone else's recording: nothing of it is shown
      Object.values(buttons).forEach((b) => { b.disabled = true; });
      state.textContent = status.message || _("The box is recording for someone else.");
      clock.textContent = "0:00";
      return;
    }
    const active = status.state === "recording" || status.state === "paused";
    buttons.start.disabled = active;
    buttons.pause.disabled = buttons.marker.disabled = buttons.stop.disabled = !active;
    paused = status.state === "paused";
    buttons.pause.textContent = paused ? _("Resume") : _("Pause");
    if (status.seconds !== undefined) clock.textContent = tingji.clock(status.seconds);
    if (!active) { clock.textContent = tingji.clock(status.seconds || 0); note.textContent = ""; }
    if (status.final_pass_until !== undefined || !active) finalPass(active && status.final_pass_until, status.notes_until);
    state.textContent = active ? (paused ? _("Paused") : _("Recording…")) : (status.stop_reason || "");
  }

  async function call(action, body) {
    const r = await tingji.api("POST", `/api/record/${action}`, body);
    if (!r.ok) { state.textContent = (r.data && r.data.detail) || _("failed (%(status)s)", { status: r.status }); return null; }
    return r.data;
  }

  // This device's microphone (source "browser"): captured here at 16 kHz and sent to the
  // box in numbered chunks of 16-bit PCM.  A chunk is dropped here only once the box has
  // it, so a lost connection resumes where it stopped.
  const mic = { stream: null, context: null, pending: [], seq: 0, sending: false };
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  async function openMic() {
    if (!navigator.mediaDevices || !window.AudioWorkletNode) {
      throw new Error("the browser allows it only over HTTPS (serve the box on the LAN: it speaks HTTPS)");
    }
    mic.stream = await navigator.mediaDevices.getUserMedia({ audio: {
      channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    mic.context = new AudioContext({ sampleRate: 16000 });
    await mic.context.audioWorklet.addModule("/static/capture-worklet.js");
    const node = new AudioWorkletNode(mic.context, "tingji-capture");
    node.port.onmessage = (e) => {
      const pcm = new Int16Array(e.data.length);
      for (let i = 0; i < e.data.length; i++) pcm[i] = Math.max(-1, Math.min(1, e.data[i])) * 32767;
      mic.pending.push({ seq: mic.seq++, pcm });
      send();
    };
    mic.context.createMediaStreamSource(mic.stream).connect(node);
  }

  function closeMic() {
    if (mic.stream) mic.stream.getTracks().forEach((t) => t.stop());
    if (mic.context) mic.context.close();
    mic.stream = mic.context = null;
  }

  async function send() {
    if (mic.sending) return;
    mic.sending = true;
    try {
      for (let tries = 0; mic.pending.length && tries < 600;) {
        const chunk = mic.pending[0];
        let r = null;
        try {
          r = await fetch(`/api/record/chunk?seq=${chunk.seq}`, {
            method: "POST", body: chunk.pcm.buffer, credentials: "same-origin",
            headers: { "Content-Type": "application/octet-stream", "X-CSRF-Token": tingji.csrf() } });
        } catch (err) { r = null; }
        if (r && r.ok) { mic.pending.shift(); tries = 0; continue; }
        if (r && (r.status === 400 || r.status === 403 || r.status === 401)) {
          mic.pending = [];  // refused for good (stopped elsewhere, signed out): no resending
          break;
        }
        if (r && r.status === 409) {
          const d = await r.json().catch(() => ({}));
          if (d.next === undefined) { mic.pending = []; break; }  // not recording any more
          mic.pending.forEach((c, i) => { c.seq = d.next + i; });  // the box wants d.next
          mic.seq = d.next + mic.pending.length;
          continue;
        }
        state.textContent = _("Connection lost: resending the audio…");
        tries++;
        await sleep(1000);
      }
    } finally { mic.sending = false; }
  }

  buttons.start.addEventListener("click", async () => {
    live.textContent = "";
    const speakers = form.elements.namedItem("speakers").value;
    const source = form.source.value;
    if (source === "browser") {
      try { await openMic(); } catch (err) {
        closeMic();
        state.textContent = _("This device's microphone cannot be used: %(reason)s", { reason: err.message });
        return;
      }
    }
    const data = await call("start", { title: form.elements.namedItem("title").value || null, source, profile: form.profile.value, speakers: speakers ? parseInt(speakers, 10) : null });
    if (data) show(data); else closeMic();
  });
  buttons.pause.addEventListener("click", async () => { const d = await call(paused ? "resume" : "pause"); if (d) show(d); });
  buttons.marker.addEventListener("click", async () => {
    const text = prompt(_("Marker note (optional):"), "");
    if (text === null) return;
    const m = await call("marker", { note: text });
    if (m) note.textContent = " · " + _("marker at %(time)s", { time: tingji.clock(m.t) });
  });
  buttons.stop.addEventListener("click", async () => {
    buttons.stop.disabled = true;
    state.textContent = _("Stopping…");
    if (mic.stream) {  // what this device recorded reaches the box before it stops
      closeMic();
      for (let i = 0; i < 100 && (mic.pending.length || mic.sending); i++) { send(); await sleep(100); }
    }
    const data = await call("stop");
    if (data) { state.textContent = _("Saved: transcribing…"); location.href = "/recordings/" + data.recording_id; }
  });

  const events = new EventSource("/api/record/events");
  events.addEventListener("status", (e) => show(JSON.parse(e.data)));
  events.addEventListener("state", (e) => {
    const ev = JSON.parse(e.data);
    show({ state: ev.state === "stopped" ? "idle" : ev.state, stop_reason: ev.reason });
  });
  events.addEventListener("level", (e) => {
    const ev = JSON.parse(e.data);
    const level = Math.round(Math.max(0, Math.min(100, ((ev.peak_db + 60) / 60) * 100)));
    meter.style.width = level + "%";
    meter.parentElement.setAttribute("aria-valuenow", level);
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
  events.addEventListener("final_pass", (e) => { const d = JSON.parse(e.data); finalPass(d.until, d.notes_until); });
  events.addEventListener("marker", (e) => { note.textContent = " · " + _("marker at %(time)s", { time: tingji.clock(JSON.parse(e.data).t) }); });
})();
