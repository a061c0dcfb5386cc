// The phone image viewer: a plain canvas fed by server-rendered JPEG frames.
// One finger drags slices (or, in "window" mode, brightness/contrast: up/down = level,
// left/right = width), or pans when zoomed; two fingers pinch; double-tap resets; the
// slider, window presets and cine play sit below within thumb reach. Frames ahead of the
// finger are prefetched. Frame URLs carry the viewing's capability (one policy decision
// for the series, services/portal/viewing.py); when it expires the page reopens itself.
const stage = document.querySelector(".stage");
const canvas = document.getElementById("view");
const overlay = document.getElementById("overlay");
const slider = document.getElementById("slice");
const playButton = document.getElementById("play");
const speedSelect = document.getElementById("speed");
const save = document.getElementById("save-image");
const frames = JSON.parse(document.getElementById("frames").textContent);
const ctx = canvas.getContext("2d");
const count = frames.items.length;

const state = {
  index: 0, preset: canvas.dataset.preset, zoom: 1, x: 0, y: 0,
  mode: "slice", wl: null, playing: false,
};
const cache = new Map();
// 512 px: a CT slice's own size; larger only upsamples and triples the bytes (63 KB against
// 26 KB measured at 768 px), and 4G is bandwidth-bound when scrolling (bench/web_bench.py).
const size = Math.min(512, Math.max(256, Math.round(stage.clientWidth * (window.devicePixelRatio || 1) / 256) * 256));
const AHEAD = 12;
const BEHIND = 3;
let renders = 0;

// The window the server renders: a preset name, or "custom" with state.wl = [width, level].
function windowKey() {
  return state.preset === "custom" ? `c${state.wl[0]}:${state.wl[1]}` : state.preset;
}

function url(i, key) {
  const [sop, frame] = frames.items[i];
  const win = key.startsWith("c")
    ? `preset=custom&ww=${key.slice(1).split(":")[0]}&wc=${key.split(":")[1]}`
    : `preset=${key}`;
  return `${frames.base}/${encodeURIComponent(sop)}/${frame}?${win}&size=${size}`;
}

let reopening = false;
function expired() {
  // The capability expired or the session ended: reopen the page at this slice (the
  // server decides again, or sends a signed-out phone to the sign-in page).
  if (reopening) return;
  reopening = true;
  const here = new URL(window.location.href);
  here.searchParams.set("start", String(state.index + 1));
  fetch(url(state.index, windowKey()), { credentials: "same-origin" }).then((r) => {
    if (r.status === 401) window.location.replace(here.toString());
    else reopening = false;
  }).catch(() => { reopening = false; });
}

function load(i, key) {
  const id = `${key}:${i}`;
  let entry = cache.get(id);
  if (!entry) {
    const img = new Image();
    img.decoding = "async";
    entry = { img, ready: new Promise((ok, fail) => { img.onload = ok; img.onerror = fail; }) };
    entry.ready.catch(() => { cache.delete(id); expired(); });
    img.src = url(i, key);
    cache.set(id, entry);
    if (cache.size > 700) cache.delete(cache.keys().next().value);
  }
  return entry;
}

function prefetch(i) {
  const key = windowKey();
  const ahead = state.playing ? Math.min(count - 1, 30) : AHEAD;
  for (let d = 1; d <= ahead; d += 1) {
    if (state.playing) load((i + d) % count, key);
    else if (i + d < count) load(i + d, key);
    if (d <= BEHIND && i - d >= 0 && !state.playing) load(i - d, key);
  }
}

function resize() {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(stage.clientWidth * ratio);
  canvas.height = Math.round(stage.clientHeight * ratio);
}

function draw(img) {
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const fit = Math.min(canvas.width / img.naturalWidth, canvas.height / img.naturalHeight) * state.zoom;
  const w = img.naturalWidth * fit;
  const h = img.naturalHeight * fit;
  const ratio = window.devicePixelRatio || 1;
  ctx.drawImage(img, (canvas.width - w) / 2 + state.x * ratio, (canvas.height - h) / 2 + state.y * ratio, w, h);
  renders += 1;
  // For bench/web_bench.py (Chromium's performance timeline): time to the first image.
  if (renders === 1) performance.mark("cloudfilm:first-frame");
  canvas.dataset.index = String(state.index + 1);
  canvas.dataset.preset = state.preset;
  canvas.dataset.window = state.preset === "custom" ? `${state.wl[0]},${state.wl[1]}` : "";
  canvas.dataset.renders = String(renders);
  canvas.dataset.zoom = String(state.zoom);
}

function label() {
  let wl = frames.defaultLabel;
  if (state.preset === "custom") wl = `W ${state.wl[0]} L ${state.wl[1]}`;
  else if (frames.presets[state.preset]) wl = `W ${frames.presets[state.preset][0]} L ${frames.presets[state.preset][1]}`;
  overlay.textContent = `${state.index + 1} / ${count}  ${wl}`;
}

let wanted = 0;
function show(i) {
  state.index = Math.max(0, Math.min(count - 1, i));
  slider.value = String(state.index + 1);
  if (save) {
    // "Save this image": the slice shown, as a JPEG (a download, audited as such).
    const [sop, frame] = frames.items[state.index];
    save.href = `${save.dataset.base}/${encodeURIComponent(sop)}/${frame}.jpg`;
  }
  label();
  const ticket = ++wanted;
  const entry = load(state.index, windowKey());
  entry.ready.then(() => { if (ticket === wanted) draw(entry.img); }).catch(() => {});
  prefetch(state.index);
}

function redraw() {
  const entry = cache.get(`${windowKey()}:${state.index}`);
  if (entry && entry.img.complete && entry.img.naturalWidth) draw(entry.img);
}

slider.addEventListener("input", () => { stop(); show(Number(slider.value) - 1); });

function pressed(selector, chosen) {
  document.querySelectorAll(selector).forEach((b) => b.setAttribute("aria-pressed", String(b === chosen)));
}

document.querySelectorAll(".presets button[data-preset]").forEach((button) => {
  button.addEventListener("click", () => {
    state.preset = button.dataset.preset;
    pressed(".presets button[data-preset]", button);
    show(state.index);
  });
});

// What one finger does: scroll slices, or adjust the window.
document.querySelectorAll(".modes button[data-mode]").forEach((button) => {
  button.addEventListener("click", () => {
    state.mode = button.dataset.mode;
    pressed(".modes button[data-mode]", button);
    stage.dataset.mode = state.mode;
  });
});

// Window drag: starts from the preset shown (else the image's own window), snapped to
// steps so that phones share the server's frame cache; one frame in flight at a time.
function startWindow() {
  if (state.preset === "custom") return state.wl.slice();
  return (frames.presets[state.preset] || frames.window).slice();
}
function snap(width, level) {
  const step = width >= 400 ? 10 : width >= 100 ? 5 : 1;
  return [Math.max(1, Math.round(width / step) * step), Math.round(level / step) * step];
}
let windowBusy = false;
let windowNext = null;
function applyWindow(wl) {
  state.preset = "custom";
  state.wl = wl;
  pressed(".presets button[data-preset]", null);
  label();
  if (windowBusy) { windowNext = wl; return; }
  windowBusy = true;
  const entry = load(state.index, windowKey());
  const ticket = ++wanted;
  entry.ready.then(() => { if (ticket === wanted) draw(entry.img); }).catch(() => {}).finally(() => {
    windowBusy = false;
    if (windowNext) { const n = windowNext; windowNext = null; applyWindow(n); }
  });
}

// Cine: plays the series in a loop (ultrasound clips and multi-frame objects start so).
let timer = null;
function fps() { return Number(speedSelect ? speedSelect.value : frames.fps) || frames.fps; }
function tick() {
  const next = (state.index + 1) % count;
  const entry = load(next, windowKey());
  // Advance only to a frame that has arrived: a slow network slows the loop, never
  // shows black frames.
  if (entry.img.complete && entry.img.naturalWidth) show(next);
  else prefetch(state.index);
}
function play() {
  if (!playButton || count < 2) return;
  state.playing = true;
  playButton.setAttribute("aria-pressed", "true");
  playButton.textContent = playButton.dataset.pause;
  clearInterval(timer);
  timer = setInterval(tick, 1000 / fps());
  prefetch(state.index);
}
function stop() {
  if (!state.playing) return;
  state.playing = false;
  clearInterval(timer);
  playButton.setAttribute("aria-pressed", "false");
  playButton.textContent = playButton.dataset.play;
}
if (playButton) playButton.addEventListener("click", () => (state.playing ? stop() : play()));
if (speedSelect) speedSelect.addEventListener("change", () => { if (state.playing) play(); });

// Pointer gestures: one finger drags slices or the window (or pans when zoomed), two pinch.
const pointers = new Map();
let start = null;
let lastTap = 0;
function begin(e) {
  start = {
    index: state.index, zoom: state.zoom, x: state.x, y: state.y,
    px: e.clientX, py: e.clientY, dist: spread(), wl: state.mode === "window" ? startWindow() : null,
  };
}
stage.addEventListener("pointerdown", (e) => {
  stage.setPointerCapture(e.pointerId);
  pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
  stop();
  begin(e);
});
stage.addEventListener("pointermove", (e) => {
  if (!pointers.has(e.pointerId) || !start) return;
  pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
  const dx = e.clientX - start.px;
  const dy = e.clientY - start.py;
  if (pointers.size >= 2) {
    if (start.dist > 0) { state.zoom = Math.max(1, Math.min(8, start.zoom * spread() / start.dist)); redraw(); }
  } else if (state.mode === "window" && start.wl) {
    // A thumb's travel (~300 px) spans about twice the starting width: fine near a
    // preset, and from lung to bone in one sweep.
    const k = Math.max(1, start.wl[0] / 150);
    applyWindow(snap(start.wl[0] + dx * k, start.wl[1] - dy * k));
  } else if (state.zoom > 1) {
    state.x = start.x + dx; state.y = start.y + dy; redraw();
  } else {
    // 6 CSS px a slice: a thumb's travel (~400 px) covers about 70 slices; the slider covers all.
    show(start.index + Math.round(dy / 6));
  }
});
function end(e) {
  pointers.delete(e.pointerId);
  if (pointers.size === 0) {
    const now = Date.now();
    const still = start && Math.abs(e.clientX - start.px) + Math.abs(e.clientY - start.py) < 10;
    if (still && now - lastTap < 300) { state.zoom = 1; state.x = 0; state.y = 0; redraw(); lastTap = 0; }
    else if (still) lastTap = now;
    if (start && start.wl) prefetch(state.index);
    start = null;
  } else {
    begin(e);
  }
}
stage.addEventListener("pointerup", end);
stage.addEventListener("pointercancel", end);
function spread() {
  const p = [...pointers.values()];
  return p.length < 2 ? 0 : Math.hypot(p[0].x - p[1].x, p[0].y - p[1].y);
}

window.addEventListener("resize", () => { resize(); redraw(); });
resize();
show(Math.max(0, Number(canvas.dataset.start || 1) - 1));
if (frames.cine && count > 1) play();
// For tests, the bench and assistive tools: the current slice is readable as an attribute.
window.cloudfilmViewer = { show: (n) => { stop(); show(n - 1); }, play, stop, state };
