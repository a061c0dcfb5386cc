// The phone image viewer: a plain canvas fed by server-rendered JPEG frames.
// Drag (or swipe) up/down or the slider to scroll slices, pinch to zoom, drag to pan when
// zoomed, double-tap to reset, window presets; frames ahead of the finger are prefetched.
const stage = document.querySelector(".stage");
const canvas = document.getElementById("view");
const overlay = document.getElementById("overlay");
const slider = document.getElementById("slice");
const frames = JSON.parse(document.getElementById("frames").textContent);
const ctx = canvas.getContext("2d");

const state = { index: 0, preset: canvas.dataset.preset, zoom: 1, x: 0, y: 0 };
const cache = new Map();
// 512 px: a CT slice's own size; larger only upsamples and triples the bytes (63 KB against
// 26 KB measured at 768 px), and 4G is bandwidth-bound when scrolling (bench/web_bench.py).
const size = Math.min(512, Math.max(256, Math.round(stage.clientWidth * (window.devicePixelRatio || 1) / 256) * 256));
let renders = 0;

function url(i, preset) {
  const [sop, frame] = frames.items[i];
  return `${frames.base}/${encodeURIComponent(sop)}/${frame}?preset=${preset}&size=${size}`;
}

function load(i, preset) {
  const key = `${preset}:${i}`;
  let entry = cache.get(key);
  if (!entry) {
    const img = new Image();
    img.decoding = "async";
    entry = { img, ready: new Promise((ok, fail) => { img.onload = ok; img.onerror = fail; }) };
    img.src = url(i, preset);
    cache.set(key, entry);
    if (cache.size > 600) cache.delete(cache.keys().next().value);
  }
  return entry;
}

function prefetch(i) {
  for (let d = 1; d <= 8; d += 1) {
    if (i + d < frames.items.length) load(i + d, state.preset);
    if (d <= 3 && i - d >= 0) load(i - d, state.preset);
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
  canvas.dataset.renders = String(renders);
}

function label() {
  const p = frames.presets[state.preset];
  const wl = p ? `W ${p[0]} L ${p[1]}` : frames.defaultLabel;
  overlay.textContent = `${state.index + 1} / ${frames.items.length}  ${wl}`;
}

let wanted = 0;
function show(i) {
  state.index = Math.max(0, Math.min(frames.items.length - 1, i));
  slider.value = String(state.index + 1);
  label();
  const ticket = ++wanted;
  const entry = load(state.index, state.preset);
  entry.ready.then(() => { if (ticket === wanted) draw(entry.img); }).catch(() => {});
  prefetch(state.index);
}

function redraw() {
  const entry = cache.get(`${state.preset}:${state.index}`);
  if (entry && entry.img.complete && entry.img.naturalWidth) draw(entry.img);
}

slider.addEventListener("input", () => show(Number(slider.value) - 1));

document.querySelectorAll(".presets button").forEach((button) => {
  button.addEventListener("click", () => {
    state.preset = button.dataset.preset;
    document.querySelectorAll(".presets button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
    show(state.index);
  });
});

// Pointer gestures: one finger drags slices (or pans when zoomed), two fingers pinch.
const pointers = new Map();
let start = null;
let lastTap = 0;
stage.addEventListener("pointerdown", (e) => {
  stage.setPointerCapture(e.pointerId);
  pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
  start = { index: state.index, zoom: state.zoom, x: state.x, y: state.y, px: e.clientX, py: e.clientY, dist: spread() };
});
stage.addEventListener("pointermove", (e) => {
  if (!pointers.has(e.pointerId) || !start) return;
  pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
  if (pointers.size >= 2) {
    if (start.dist > 0) { state.zoom = Math.max(1, Math.min(8, start.zoom * spread() / start.dist)); redraw(); }
  } else if (state.zoom > 1) {
    state.x = start.x + (e.clientX - start.px); state.y = start.y + (e.clientY - start.py); redraw();
  } else {
    // 6 CSS px a slice: a thumb's travel (~400 px) covers about 70 slices; the slider covers all.
    show(start.index + Math.round((e.clientY - start.py) / 6));
  }
});
function end(e) {
  pointers.delete(e.pointerId);
  if (pointers.size === 0) {
    const now = Date.now();
    const moved = start && Math.abs(e.clientX - start.px) + Math.abs(e.clientY - start.py) < 10;
    if (moved && now - lastTap < 300) { state.zoom = 1; state.x = 0; state.y = 0; redraw(); lastTap = 0; }
    else if (moved) lastTap = now;
    start = null;
  } else {
    start = { index: state.index, zoom: state.zoom, x: state.x, y: state.y, px: e.clientX, py: e.clientY, dist: spread() };
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
// For tests and assistive tools: the current slice is readable as an attribute.
window.cloudfilmViewer = { show: (n) => show(n - 1), state };
