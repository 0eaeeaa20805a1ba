// tanet serve's page: pick or drop a video, see the model's top-k, the frames it sampled, the
// sliding-window timeline (synced with the video's playhead) and TAM's kernels. A file the
// browser cannot play (an AVI with MPEG-4 Part 2, as in UCF101/HMDB51) is shown by the frames
// the model sampled, which the server draws; the timeline's cursor moves through them. Plain JS,
// no build step, no network beyond this server. A server with several models lets you pick one;
// the timeline shows the answer's action segments as labelled bands above the score lines.
import { drawAxes, drawSegments, el, labelColors } from "./chart.js";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { file: null, url: null, card: null, timeline: null, tamFor: null, gen: 0,
                  playable: true, facts: null, sampled: [], strip: [], stripKey: "", shown: 0,
                  models: [], model: null };

  // ------------------------------------------------------------------ talking to the server
  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { "X-API-Key": key } : {};
  }

  async function api(path, options = {}) {
    const res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    let body;
    try {
      body = await res.json();
    } catch (e) {
      body = { error: `HTTP ${res.status} ${res.statusText}` };
    }
    if (!res.ok) {
      const err = new Error(body.error || `HTTP ${res.status}`);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function upload(path, params) {
    const form = new FormData();
    form.append("file", state.file, state.file.name);
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries({ model: state.model, ...params })) {
      if (v !== "" && v != null) query.set(k, v);
    }
    return api(`${path}?${query}`, { method: "POST", body: form });
  }

  // The server's models (GET v1/models): a select when there are several, the card of the one
  // picked (the server's default first).
  async function loadModels() {
    try {
      const { default: first, models } = await api("v1/models");
      state.models = models;
      const select = $("model");
      select.replaceChildren(...models.map((m) => new Option(m.model, m.model)));
      select.hidden = $("model-label").hidden = models.length < 2;
      pickModel(models.some((m) => m.model === state.model) ? state.model : first);
    } catch (e) {
      if (e.status === 401) {
        $("model-info").textContent = "This server needs an API key: enter it under Options.";
        $("options").open = true;
      } else {
        $("model-info").textContent = `Cannot read the model card: ${e.message}`;
      }
    }
  }

  function pickModel(name) {
    const card = state.models.find((m) => m.model === name);
    state.model = name;
    state.card = card;
    $("model").value = name;
    $("model-info").textContent = `${card.name}: ${card.num_classes} classes, ${card.frames} ` +
      `frames of ${card.size[1]}×${card.size[0]} px, ${card.backend}` +
      (card.card && card.card.multilabel
        ? `, multi-label (classes scoring ${card.card.threshold.toFixed(3)} or more)` : "") +
      (state.models.length > 1 ? ` (model "${card.model}")` : "");
    $("topk").value = card.topk;
    if (![...$("views").options].some((o) => o.value === card.views)) {
      $("views").add(new Option(card.views, card.views));
    }
    $("views").value = card.views;
  }

  // ------------------------------------------------------------------ status and errors
  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  function pct(score) {
    return `${(100 * score).toFixed(1)} %`;
  }

  // ------------------------------------------------------------------ a new video
  // Whether this browser plays the file: its metadata loads with a picture size, and no error
  // (an AVI: MEDIA_ERR_SRC_NOT_SUPPORTED at once; canPlayType("video/x-msvideo") is "").
  function playability(video) {
    return new Promise((resolve) => {
      const verdict = () => resolve(!video.error && video.readyState >= 1 && video.videoWidth > 0);
      if (video.error || video.readyState >= 1) return verdict();
      video.addEventListener("loadedmetadata", verdict, { once: true });
      video.addEventListener("error", verdict, { once: true });
      setTimeout(verdict, 4000);
    });
  }

  function autoWindow(duration) {
    const asked = parseFloat($("window").value);
    if (asked > 0) return asked;
    if (!Number.isFinite(duration)) return 2;  // nobody knows how long it is: ask anyway
    if (duration < 4) return null;
    return Math.min(10, Math.max(1, Math.round(duration / 8)));
  }

  async function handleFile(file) {
    if (!file) return;
    const gen = ++state.gen;
    state.file = file;
    state.timeline = null;
    state.tamFor = null;
    state.facts = null;
    state.shown = 0;
    showError("");
    if (state.url) URL.revokeObjectURL(state.url);
    state.url = URL.createObjectURL(file);
    const video = $("video");
    video.src = state.url;
    const playable = playability(video);
    $("frame-img").removeAttribute("src");
    setPlayable(true);
    setSampled([]);
    playable.then((ok) => { if (!ok && gen === state.gen && state.playable) setPlayable(false); });
    $("file-name").textContent = file.name;
    $("result").hidden = false;
    $("drop").classList.add("compact");
    $("topk-list").replaceChildren();
    $("topk-list").setAttribute("aria-busy", "true");
    $("chart").replaceChildren();
    $("now").textContent = "";
    $("tam").replaceChildren();
    $("timeline-note").textContent = "";
    setStatus(`Classifying ${file.name}…`);
    const topk = $("topk").value;
    let pred;
    try {
      pred = await upload("v1/predict", { views: $("views").value, topk, thumbnails: 1 });
    } catch (e) {
      if (gen === state.gen) {
        setStatus("");
        showError(`${file.name}: ${e.message}`);
      }
      return;
    }
    if (gen !== state.gen) return;
    renderTop(pred);
    state.facts = pred.video || null;
    setSampled(pred.sampled || []);
    if (!$("panel-tam").hidden) loadTam();
    const canPlay = await playable;
    if (gen !== state.gen) return;
    setPlayable(canPlay);
    const duration = canPlay && Number.isFinite(video.duration) ? video.duration
      : (state.facts ? state.facts.duration : NaN);
    const window = autoWindow(duration);
    if (window === null) {
      $("timeline-note").textContent = `The video is ${duration.toFixed(1)} s long: too short for ` +
        "a timeline (4 s or more, or set a window under Options).";
      return;
    }
    $("timeline-note").textContent = `Classifying ${window} s windows…`;
    try {
      const tl = await upload("v1/predict", { views: "1x1", topk, window,
                                              thumbnails: state.playable ? "" : 1 });
      if (gen !== state.gen) return;
      renderTimeline(tl, duration);
    } catch (e) {
      if (gen === state.gen) $("timeline-note").textContent = `No timeline: ${e.message}`;
    }
  }

  // a multi-label model's answer: every class over the card's threshold (pred.labels)
  function renderLabels(pred) {
    const box = $("labels");
    box.hidden = !pred.labels;
    if (!pred.labels) return;
    box.textContent = pred.labels.length
      ? `Over the threshold: ${pred.labels.map((l) => `${l.label} (${pct(l.score)})`).join(", ")}`
      : "No class over the threshold.";
  }

  function renderTop(pred) {
    const list = $("topk-list");
    list.replaceChildren();
    renderLabels(pred);
    const over = new Set((pred.labels || []).map((l) => l.label));
    for (const { label, score } of pred.top) {
      const li = document.createElement("li");
      if (over.has(label)) li.className = "over";
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${Math.max(0.5, 100 * score)}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "score";
      value.textContent = pct(score);
      li.append(name, track, value);
      list.append(li);
    }
    list.removeAttribute("aria-busy");
    const top = pred.top[0];
    const warnings = pred.warnings && pred.warnings.length ? ` (warnings: ${pred.warnings.join("; ")})` : "";
    if (pred.labels) {
      const names = pred.labels.map((l) => l.label).join(", ") || "no class over the threshold";
      setStatus(`${pred.path}: ${names}${warnings}`);
      return;
    }
    setStatus(top ? `${pred.path}: ${top.label} (${pct(top.score)})${warnings}` : "");
  }

  // ------------------------------------------------------------------ frames the model sampled
  function frameTime(index) {
    const fps = state.facts && state.facts.fps ? state.facts.fps : 25;
    return index / fps;
  }

  // The player, or where the browser cannot play the file, the frame view and a note saying why.
  function setPlayable(canPlay) {
    state.playable = canPlay;
    $("video").hidden = !canPlay;
    $("frame-view").hidden = canPlay;
    const note = $("play-note");
    note.hidden = canPlay;
    if (canPlay) return;
    const f = state.facts;
    const ext = state.file ? (state.file.name.match(/\.[^./]+$/) || [""])[0].toLowerCase() : "";
    note.textContent = "This browser cannot play this file" +
      (f ? ` (${f.codec} video in ${ext ? `a ${ext} file` : f.container}, ${f.frames} frames at ` +
           `${f.fps} fps, ${f.duration.toFixed(1)} s)` : "") +
      ". Shown instead: the frames the model sampled; move through them with the timeline or the strip.";
    showFrames(state.shown);
  }

  // The answer's sampled frames [{clip, index, time, image}]: the strip when no window is shown.
  function setSampled(frames) {
    state.sampled = frames.filter((f) => f.image);
    state.stripKey = "";
    const clips = new Set(frames.map((f) => f.clip)).size;
    state.sampledNote = frames.length ? `The ${frames.length} frames the model sampled for this ` +
      `answer${clips > 1 ? ` (${clips} clips)` : ""}; select one to go there.` : "";
    showFrames(state.shown);
  }

  function windowFrames(tl, w) {
    if (!tl.thumbnails || !w || !w.frames) return null;
    const frames = w.frames.filter((i) => tl.thumbnails[i])
      .map((i) => ({ index: i, time: frameTime(i), image: tl.thumbnails[i] }));
    return frames.length ? frames : null;
  }

  function renderStrip(frames, note) {
    const key = `${note}|${frames.map((f) => f.index).join(",")}`;
    if (key === state.stripKey) return;
    state.stripKey = key;
    state.strip = frames;
    $("strip-note").textContent = note;
    $("strip").replaceChildren(...frames.map((f) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      const img = document.createElement("img");
      img.src = f.image;
      img.alt = "";
      const label = document.createElement("span");
      label.textContent = `${f.time.toFixed(2)} s`;
      button.setAttribute("aria-label", `frame ${f.index} at ${f.time.toFixed(2)} s`);
      button.addEventListener("click", () => goTo(f.time));
      button.append(img, label);
      li.append(button);
      return li;
    }));
    $("sampled").hidden = !frames.length;
  }

  // The strip (the window under the cursor's frames, or the answer's), the frame nearest to
  // `time` marked, and in the frame view where the player cannot play the file.
  function showFrames(time, w) {
    const tl = state.timeline && state.timeline.tl;
    const inWindow = tl ? windowFrames(tl, w) : null;
    if (inWindow) {
      renderStrip(inWindow, `The ${inWindow.length} frames the model sampled for the window ` +
        `${w.start.toFixed(1)}–${w.end.toFixed(1)} s, under the timeline's cursor.`);
    } else {
      renderStrip(state.sampled, state.sampledNote || "");
    }
    let best = -1;
    state.strip.forEach((f, j) => {
      if (best < 0 || Math.abs(f.time - time) < Math.abs(state.strip[best].time - time)) best = j;
    });
    [...$("strip").querySelectorAll("button")].forEach((b, j) => {
      if (j === best) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    });
    if (state.playable) return;
    if (best < 0) {
      $("frame-caption").textContent = "Waiting for the frames the model sampled…";
      return;
    }
    const f = state.strip[best];
    if ($("frame-img").getAttribute("src") !== f.image) $("frame-img").src = f.image;
    $("frame-img").alt = `frame ${f.index} of ${state.file ? state.file.name : "the video"}`;
    $("frame-caption").textContent = `frame ${f.index} at ${f.time.toFixed(2)} s`;
  }

  function goTo(time) {
    if (state.timeline) return seek(time);
    const video = $("video");
    if (state.playable && video.readyState >= 1) video.currentTime = time;
    state.shown = time;
    showFrames(time);
  }

  // ------------------------------------------------------------------ the timeline chart
  function renderTimeline(tl, duration) {
    const wins = tl.windows;
    if (!wins.length) return;
    const end = Math.max(wins[wins.length - 1].end, Number.isFinite(duration) ? duration : 0);
    const segments = tl.segments || [];
    const W = 720, H = 240, m = { l: 44, r: 12, t: segments.length ? 34 : 10, b: 34 };
    const x = (t) => m.l + (t / end) * (W - m.l - m.r);
    const y = (p) => m.t + (1 - p) * (H - m.t - m.b);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "slider", tabindex: "0",
                            "aria-label": "Timeline: class scores over time; arrows move the video",
                            "aria-valuemin": "0", "aria-valuemax": end.toFixed(2) });
    drawAxes(svg, { W, H, m, x, y, end });
    const mids = wins.map((w) => (w.start + w.end) / 2);
    const colorOf = labelColors(tl.series);
    drawSegments(svg, segments, x, 6, 20, colorOf);
    const legend = document.createElement("ul");
    legend.className = "legend";
    tl.series.forEach((s, i) => {
      const color = colorOf(s.label);
      const pts = s.scores.map((v, j) => `${x(mids[j]).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      el("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2 }, svg);
      s.scores.forEach((v, j) => el("circle", { cx: x(mids[j]), cy: y(v), r: 2.5, fill: color }, svg));
      const li = document.createElement("li");
      li.innerHTML = `<span class="swatch" style="background:${color}"></span>`;
      li.append(document.createTextNode(s.label));
      legend.append(li);
    });
    const head = el("line", { x1: x(0), x2: x(0), y1: m.t, y2: H - m.b, class: "playhead" }, svg);
    state.timeline = { tl, end, x, head, svg, mids, step: tl.stride || 1, m, W };
    svg.addEventListener("pointerdown", (ev) => {
      seekFromPointer(ev);
      svg.setPointerCapture(ev.pointerId);
    });
    svg.addEventListener("pointermove", (ev) => { if (ev.buttons) seekFromPointer(ev); });
    svg.addEventListener("keydown", onChartKey);
    $("chart").replaceChildren(svg, legend);
    const parts = segments.map((s) => `${s.label} ${s.start.toFixed(1)}–${s.end.toFixed(1)} s`);
    $("timeline-note").textContent = `${wins.length} windows of ${tl.window} s every ` +
      `${(+tl.stride).toFixed(2)} s; ${segments.length} segment${segments.length === 1 ? "" : "s"}` +
      (parts.length ? ` (bands above: ${parts.slice(0, 6).join(", ")}` +
        `${parts.length > 6 ? ", …" : ""})` : "") +
      ". Click or use the arrow keys on the chart to move the video.";
    updatePlayhead();
  }

  function seekFromPointer(ev) {
    const t = state.timeline;
    const box = t.svg.getBoundingClientRect();
    const px = ((ev.clientX - box.left) / box.width) * t.W;
    seek(((px - t.m.l) / (t.W - t.m.l - t.m.r)) * t.end);
  }

  function seek(time) {
    const t = state.timeline;
    const video = $("video");
    const clamped = Math.min(Math.max(0, time), t.end);
    if (state.playable && video.readyState >= 1) video.currentTime = clamped;
    updatePlayhead(clamped);
  }

  function onChartKey(ev) {
    const t = state.timeline;
    const now = state.playable && $("video").readyState >= 1 ? $("video").currentTime : state.shown;
    const moves = { ArrowLeft: -t.step, ArrowDown: -t.step, ArrowRight: t.step, ArrowUp: t.step,
                    PageDown: -5 * t.step, PageUp: 5 * t.step };
    if (ev.key in moves) seek(now + moves[ev.key]);
    else if (ev.key === "Home") seek(0);
    else if (ev.key === "End") seek(t.end);
    else return;
    ev.preventDefault();
  }

  function updatePlayhead(at) {
    const t = state.timeline;
    const video = $("video");
    const time = at != null ? at
      : (state.playable && video.readyState >= 1 ? video.currentTime : state.shown);
    state.shown = time;
    if (!t) return showFrames(time);
    t.head.setAttribute("x1", t.x(time));
    t.head.setAttribute("x2", t.x(time));
    let best = 0;
    t.mids.forEach((mid, j) => { if (Math.abs(mid - time) < Math.abs(t.mids[best] - time)) best = j; });
    const w = t.tl.windows[best];
    const top = w.top[0];
    const text = `${time.toFixed(1)} s: ${top.label} ${pct(top.score)} ` +
      `(window ${w.start.toFixed(1)}–${w.end.toFixed(1)} s)`;
    $("now").textContent = text;
    t.svg.setAttribute("aria-valuenow", time.toFixed(2));
    t.svg.setAttribute("aria-valuetext", text);
    showFrames(time, w);
  }

  function followVideo() {
    updatePlayhead();
    if (!$("video").paused) requestAnimationFrame(followVideo);
  }

  // ------------------------------------------------------------------ TAM tab
  async function loadTam() {
    if (!state.file || state.tamFor === state.file) return;
    const note = $("tam-note");
    if (state.card && !state.card.visualize) {
      note.textContent = "This server runs an ONNX export: TAM's kernels need the PyTorch checkpoint.";
      return;
    }
    const file = (state.tamFor = state.file);
    note.textContent = "Drawing TAM's importance maps and kernels…";
    try {
      const r = await upload("v1/visualize", { topk: $("topk").value });
      if (state.file !== file) return;
      const captions = {
        tam_kernels: "Per stage: TAM's importance map L (channels × frames), its aggregation kernels G and their mean.",
        frames: "The frames the model sampled.",
        evidence: "Per-frame class evidence before the average over frames.",
      };
      const figures = ["tam_kernels", "frames", "evidence"].filter((k) => r.images[k]).map((k) => {
        const fig = document.createElement("figure");
        const img = document.createElement("img");
        img.src = r.images[k];
        img.alt = captions[k];
        img.id = `tam-${k}`;
        const cap = document.createElement("figcaption");
        cap.textContent = captions[k];
        fig.append(img, cap);
        return fig;
      });
      $("tam").replaceChildren(...figures);
      note.textContent = r.images.tam_kernels ? `TAM in ${r.path}, as tanet visualize draws it.`
        : "This model has no TAM (TSN/TSM): frames and evidence only.";
    } catch (e) {
      state.tamFor = null;
      note.textContent = `No pictures: ${e.message}`;
    }
  }

  // ------------------------------------------------------------------ tabs (WAI-ARIA pattern)
  function selectTab(tab, focus) {
    for (const t of document.querySelectorAll('[role="tab"]')) {
      const on = t === tab;
      t.setAttribute("aria-selected", on);
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    if (tab.id === "tab-tam") loadTam();
  }

  function setupTabs() {
    const tabs = [...document.querySelectorAll('[role="tab"]')];
    tabs.forEach((tab, i) => {
      tab.addEventListener("click", () => selectTab(tab, false));
      tab.addEventListener("keydown", (ev) => {
        const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
        if (next === undefined) return;
        selectTab(tabs[(next + tabs.length) % tabs.length], true);
        ev.preventDefault();
      });
    });
  }

  // ------------------------------------------------------------------ wiring
  function setupInput() {
    $("file").addEventListener("change", (ev) => handleFile(ev.target.files[0]));
    const drop = $("drop");
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    }
    for (const name of ["dragleave", "drop"]) {
      drop.addEventListener(name, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      if (ev.dataTransfer.files.length) handleFile(ev.dataTransfer.files[0]);
    });
    // a file dropped beside the zone must not navigate away from the page
    window.addEventListener("dragover", (ev) => ev.preventDefault());
    window.addEventListener("drop", (ev) => ev.preventDefault());
    $("api-key").addEventListener("change", loadModels);
    $("model").addEventListener("change", (ev) => {
      pickModel(ev.target.value);
      if (state.file) handleFile(state.file);  // the same video, asked of the other model
    });
    const video = $("video");
    video.addEventListener("timeupdate", () => updatePlayhead());
    video.addEventListener("seeked", () => updatePlayhead());
    video.addEventListener("play", () => requestAnimationFrame(followVideo));
    // a file that fails later (a codec the browser does not decode): fall back to the frames
    video.addEventListener("error", () => { if (state.facts && state.playable) setPlayable(false); });
  }

  setupTabs();
  setupInput();
  loadModels();
})();
