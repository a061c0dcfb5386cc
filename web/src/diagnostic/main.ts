// The workstation's diagnostic viewer (issue 14): Cornerstone3D stack viewports over
// WADO-RS. The page (ws_viewer.html.j2) says which studies the doctor may open and their
// series; every byte comes from /dicomweb with the session cookie, where the access policy
// decides each request again.
import {
  Enums,
  RenderingEngine,
  cache,
  eventTarget,
  init as coreInit,
  utilities as csUtils,
  type Types,
} from "@cornerstonejs/core";
import {
  AngleTool,
  EllipticalROITool,
  Enums as ToolEnums,
  LengthTool,
  PanTool,
  PlanarRotateTool,
  ProbeTool,
  RectangleROITool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  annotation,
  init as toolsInit,
  utilities as toolUtils,
} from "@cornerstonejs/tools";
import { init as loaderInit } from "@cornerstonejs/dicom-image-loader";
import { aiSeriesShown, aiState, initAi } from "./ai_overlay";
import { useCpuRendering, useSoftwareCanvases } from "./backend";
import { decodeUncompressedInThread, decodedHere } from "./inthread";
import { FrameQueue, type Refusal, decode } from "./loader";
import { HttpError, type Series, loadSeries } from "./series";
import "./viewer.css";

type SeriesInfo = { uid: string; modality: string; description: string; count: number;
                    thumb: string | null };
type StudyInfo = { uid: string; role: string; label: string; series: SeriesInfo[] };
type Config = { dicomweb: string; studies: StudyInfo[]; layout: string; inFlight: number;
                labels: Record<string, string> };

const PRESETS: Record<string, [number, number] | null> = {
  // [width, centre]; "header" restores the values the modality wrote.
  header: null,
  lung: [1500, -600],
  mediastinum: [350, 50],
  bone: [1800, 400],
  brain: [80, 40],
  abdomen: [400, 50],
};
// The W/L tool scales the drag by the image's dynamic range, which it finds by scanning all
// 262k pixels on every mouse move (a few ms a move, more than the CPU renderer's draw). The
// range of one image does not change: scanned once per image and viewport.
class WindowLevel extends WindowLevelTool {
  static toolName = WindowLevelTool.toolName;
  private ranges = new Map<string, [string, number]>(); // viewport id -> (imageId, range)

  _getImageDynamicRangeFromViewport(viewport: any): number {
    const imageId = viewport.getCurrentImageId?.() as string | undefined;
    const known = this.ranges.get(viewport.id);
    if (imageId && known && known[0] === imageId) return known[1];
    const range = super._getImageDynamicRangeFromViewport(viewport);
    if (imageId) this.ranges.set(viewport.id, [imageId, range]);
    return range;
  }
}

const LEFT_TOOLS = [WindowLevel, PanTool, ZoomTool, PlanarRotateTool, StackScrollTool,
  LengthTool, AngleTool, RectangleROITool, EllipticalROITool, ProbeTool];
const ENGINE = "cloudfilm";
const GROUP = "cloudfilm-tools";
const { MouseBindings } = ToolEnums;

const config = JSON.parse(
  (document.getElementById("viewer-config") as HTMLElement).textContent || "{}",
) as Config;
const L = (key: string): string => config.labels[key] ?? key;
performance.mark("cloudfilm:script"); // the bundle is parsed and evaluated

type Cell = {
  id: string;
  element: HTMLDivElement;
  overlay: Record<string, HTMLElement>;
  scrollbar: HTMLInputElement;
  series: Series | null;
  queue: FrameQueue | null;
  startIndex: number;
  cine: boolean;
};

const state = {
  engine: null as RenderingEngine | null,
  cells: [] as Cell[],
  active: 0,
  layout: "1x1",
  refused: "" as string,
  firstImage: false,
  syncing: false,
  leftTool: WindowLevelTool.toolName,
  seriesCache: new Map<string, Promise<Series>>(),
};

function $(id: string): HTMLElement {
  return document.getElementById(id) as HTMLElement;
}

function stackViewport(cell: Cell): Types.IStackViewport | null {
  return (state.engine?.getViewport(cell.id) as Types.IStackViewport | undefined) ?? null;
}

// -- messages ----------------------------------------------------------------------------

function say(text: string, kind: "info" | "error" = "info"): void {
  const box = $("viewer-message");
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
}

function refused(r: Refusal | HttpError): void {
  if (state.refused) return;
  state.refused = String(r.status);
  for (const cell of state.cells) {
    cell.queue?.stop();
    if (cell.queue && cell.queue.loaded === 0) {
      // Nothing of this series came: do not leave the previous images under its labels.
      cell.element.style.visibility = "hidden";
      for (const part of Object.values(cell.overlay)) part.textContent = "";
    }
  }
  document.body.dataset.refused = state.refused;
  say(r.status === 401 ? L("session_ended") : L("access_ended"), "error");
}

// -- series into a viewport --------------------------------------------------------------

function seriesOf(study: string, uid: string): Promise<Series> {
  const key = `${study}/${uid}`;
  let found = state.seriesCache.get(key);
  if (!found) {
    // The first series' metadata was asked for before this bundle loaded (boot.ts).
    const boot = (window as any).cloudfilmBoot;
    const early = boot && boot.study === study && boot.series === uid ? boot.docs : undefined;
    found = loadSeries(config.dicomweb, study, uid, early);
    state.seriesCache.set(key, found);
    found.catch(() => state.seriesCache.delete(key));
  }
  return found;
}

async function show(cellIndex: number, study: string, uid: string, start?: number): Promise<void> {
  const cell = state.cells[cellIndex];
  if (!cell || state.refused) return;
  let series: Series;
  try {
    series = await seriesOf(study, uid);
  } catch (err) {
    if (err instanceof HttpError && (err.status === 401 || err.status === 403)) refused(err);
    else say(L("load_failed"), "error");
    return;
  }
  cell.queue?.stop();
  stopCine(cell);
  const viewport = stackViewport(cell);
  if (!viewport || !series.slices.length) return;
  const index = start ?? Math.floor(series.slices.length / 2);
  cell.series = series;
  cell.startIndex = index;
  cell.element.dataset.series = uid;
  cell.element.dataset.study = study;
  cell.scrollbar.max = String(series.slices.length);
  cell.scrollbar.value = String(index + 1);
  const imageIds = series.slices.map((s) => s.imageId);
  // The slice on screen first, then the rest centre-out (the viewport asks for its own).
  cell.queue = new FrameQueue(imageIds, config.inFlight, refused, () => {
    cell.element.dataset.loaded = "true";
    if (cellIndex === 0) performance.mark("cloudfilm:series-loaded");
  });
  cell.element.dataset.loaded = "false";
  cell.queue.start(index);
  try {
    await decode(imageIds[index]); // the queue's bytes, not a second request by the viewport
    await viewport.setStack(imageIds, index);
  } catch {
    /* a refused first frame is reported by the queue */
  }
  viewport.render();
  markThumbs();
  overlay(cell);
  aiSeriesShown();
}

// -- overlays ----------------------------------------------------------------------------

function put(el: HTMLElement, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

function overlay(cell: Cell): void {
  const viewport = stackViewport(cell);
  const series = cell.series;
  if (!viewport || !series) return;
  const index = viewport.getCurrentImageIdIndex();
  const slice = series.slices[index];
  const o = cell.overlay;
  put(o.tl, [series.patient, series.patientId, series.sexAge].filter(Boolean)
    .join("\n"));
  put(o.tr, [series.institution, series.studyDate, series.studyDescription]
    .filter(Boolean).join("\n"));
  const props = viewport.getProperties();
  const voi = props.voiRange;
  const wl = voi ? csUtils.windowLevel.toWindowLevel(voi.lower, voi.upper) : null;
  put(o.bl, [
    `${series.modality} ${series.description}`.trim(),
    `${L("image")} ${index + 1}/${series.slices.length}`,
    slice?.position != null ? `${L("position")} ${slice.position.toFixed(1)} mm` : "",
    slice?.thickness != null ? `${L("thickness")} ${slice.thickness} mm` : "",
  ].filter(Boolean).join("\n"));
  const zoom = (viewport as any).getZoom?.() as number | undefined;
  put(o.br, [
    wl ? `W ${Math.round(wl.windowWidth)} L ${Math.round(wl.windowCenter)}` : "",
    zoom ? `${L("zoom")} ${zoom.toFixed(2)}×` : "",
    props.invert ? L("inverted") : "",
    cell.queue && cell.queue.loaded < cell.queue.total
      ? `${L("loading")} ${cell.queue.loaded}/${cell.queue.total}` : "",
  ].filter(Boolean).join("\n"));
  const shown = String(index + 1);
  if (cell.scrollbar.value !== shown) cell.scrollbar.value = shown;
  if (cell.element.dataset.index !== shown) cell.element.dataset.index = shown;
}

// -- synchronised scroll (prior comparison) ------------------------------------------------

function synchronise(from: Cell): void {
  if (state.syncing || !from.series || !($("sync") as HTMLInputElement).checked) return;
  const source = stackViewport(from);
  if (!source) return;
  const index = source.getCurrentImageIdIndex();
  const here = from.series.slices[index];
  state.syncing = true;
  try {
    for (const cell of state.cells) {
      const target = stackViewport(cell);
      if (cell === from || !cell.series || !target || cell.element.hidden) continue;
      let next: number;
      const sameFrame = cell.series.frameOfReference &&
        cell.series.frameOfReference === from.series.frameOfReference;
      if (sameFrame && here?.position != null) {
        // Same frame of reference: the slice nearest in space.
        let best = 0;
        cell.series.slices.forEach((s, i) => {
          const b = cell.series!.slices[best].position ?? Infinity;
          if (s.position != null && Math.abs(s.position - here.position!) <
              Math.abs(b - here.position!)) best = i;
        });
        next = best;
      } else {
        // Otherwise by index, keeping the offset the two had when they were put side by side.
        next = cell.startIndex + (index - from.startIndex);
      }
      next = Math.max(0, Math.min(cell.series.slices.length - 1, next));
      if (next !== target.getCurrentImageIdIndex()) void target.setImageIdIndex(next);
    }
  } finally {
    state.syncing = false;
  }
}

// -- layout, tools, presets ----------------------------------------------------------------

function setLayout(layout: string): void {
  state.layout = layout;
  const [rows, cols] = layout.split("x").map(Number); // "1x2": one row, two side by side
  const grid = $("grid");
  grid.style.setProperty("--cols", String(cols));
  grid.style.setProperty("--rows", String(rows));
  state.cells.forEach((cell, i) => {
    (cell.element.parentElement as HTMLElement).hidden = i >= cols * rows;
  });
  for (const b of document.querySelectorAll<HTMLButtonElement>("[data-layout]")) {
    b.setAttribute("aria-pressed", String(b.dataset.layout === layout));
  }
  state.engine?.resize(true, true);
  // Fill new cells: the prior's first series beside the current, then further series.
  const queue = config.studies.flatMap((st) => st.series.filter((s) => s.thumb)
    .map((s) => [st.uid, s.uid] as const));
  const prior = config.studies.find((s) => s.role === "prior");
  state.cells.forEach((cell, i) => {
    if (i >= cols * rows || cell.series) return;
    let pick = queue[i] ?? null;
    if (i === 1 && prior) {
      const first = prior.series.find((s) => s.thumb);
      if (first) pick = [prior.uid, first.uid] as const;
    }
    if (pick) {
      const current = state.cells[0];
      const start = current.series && pick[0] !== current.series.study
        ? undefined : current.startIndex;
      void show(i, pick[0], pick[1], start);
    }
  });
}

function setActive(i: number): void {
  state.active = i;
  state.cells.forEach((c, j) => c.element.parentElement?.classList.toggle("active", i === j));
  markThumbs();
}

function setTool(name: string): void {
  const group = ToolGroupManager.getToolGroup(GROUP);
  if (!group) return;
  group.setToolPassive(state.leftTool);
  group.setToolActive(name, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  state.leftTool = name;
  for (const b of document.querySelectorAll<HTMLButtonElement>("[data-tool]")) {
    b.setAttribute("aria-pressed", String(b.dataset.tool === name));
  }
}

function activeViewport(): Types.IStackViewport | null {
  const cell = state.cells[state.active];
  return cell ? stackViewport(cell) : null;
}

function preset(name: string): void {
  const viewport = activeViewport();
  if (!viewport) return;
  const values = PRESETS[name];
  if (values === null) {
    // the header's window (the modality's own)
    viewport.resetProperties();
  } else if (values) {
    viewport.setProperties({ voiRange: csUtils.windowLevel.toLowHighRange(values[0], values[1]) });
  }
  viewport.render();
  overlay(state.cells[state.active]);
}

function transform(kind: string): void {
  const viewport = activeViewport();
  if (!viewport) return;
  const vp = viewport as any;
  const pres = vp.getViewPresentation?.() ?? {};
  if (kind === "rotate") vp.setViewPresentation({ rotation: ((pres.rotation ?? 0) + 90) % 360 });
  if (kind === "flip-h") vp.setViewPresentation({ flipHorizontal: !pres.flipHorizontal });
  if (kind === "flip-v") vp.setViewPresentation({ flipVertical: !pres.flipVertical });
  if (kind === "invert") viewport.setProperties({ invert: !viewport.getProperties().invert });
  if (kind === "reset") {
    viewport.resetCamera();
    viewport.resetProperties();
  }
  viewport.render();
  overlay(state.cells[state.active]);
}

function stopCine(cell: Cell): void {
  if (cell.cine) toolUtils.cine.stopClip(cell.element);
  cell.cine = false;
}

function cine(): void {
  const cell = state.cells[state.active];
  if (!cell?.series) return;
  if (cell.cine) stopCine(cell);
  else {
    toolUtils.cine.playClip(cell.element, { framesPerSecond: cell.series.fps, loop: true });
    cell.cine = true;
  }
  $("cine").setAttribute("aria-pressed", String(cell.cine));
}

// Wheel notches and key repeats that come faster than the screen are summed and applied
// once an animation frame: one slice change a frame, none dropped.
let scrollPending = 0;
let scrollScheduled = false;

function scrollBy(delta: number): void {
  scrollPending += delta;
  if (scrollScheduled) return;
  scrollScheduled = true;
  requestAnimationFrame(() => {
    const by = scrollPending;
    scrollPending = 0;
    scrollScheduled = false;
    const cell = state.cells[state.active];
    const viewport = cell && stackViewport(cell);
    if (!viewport || !cell.series) return;
    const n = cell.series.slices.length;
    const next = Math.max(0, Math.min(n - 1, viewport.getCurrentImageIdIndex() + by));
    void viewport.setImageIdIndex(next);
  });
}

function markThumbs(): void {
  const current = state.cells[state.active]?.series?.uid;
  for (const a of document.querySelectorAll<HTMLButtonElement>(".thumb")) {
    a.setAttribute("aria-current", String(a.dataset.series === current));
  }
}

// -- keyboard --------------------------------------------------------------------------------

const KEYS: Record<string, () => void> = {
  ArrowUp: () => scrollBy(-1), ArrowDown: () => scrollBy(1),
  PageUp: () => scrollBy(-10), PageDown: () => scrollBy(10),
  Home: () => scrollBy(-1e6), End: () => scrollBy(1e6),
  w: () => setTool(WindowLevelTool.toolName), p: () => setTool(PanTool.toolName),
  z: () => setTool(ZoomTool.toolName), s: () => setTool(StackScrollTool.toolName),
  l: () => setTool(LengthTool.toolName), a: () => setTool(AngleTool.toolName),
  o: () => setTool(RectangleROITool.toolName), e: () => setTool(EllipticalROITool.toolName),
  b: () => setTool(ProbeTool.toolName), t: () => setTool(PlanarRotateTool.toolName),
  r: () => transform("rotate"), h: () => transform("flip-h"), v: () => transform("flip-v"),
  i: () => transform("invert"), Escape: () => transform("reset"), c: () => cine(),
  "1": () => preset("lung"), "2": () => preset("mediastinum"), "3": () => preset("bone"),
  "4": () => preset("brain"), "5": () => preset("abdomen"), "0": () => preset("header"),
  "?": () => toggleHelp(),
};

function toggleHelp(): void {
  const help = $("help") as HTMLDialogElement;
  if (help.open) help.close();
  else help.showModal();
}

// -- start -----------------------------------------------------------------------------------

function buildCells(): void {
  state.cells = [...document.querySelectorAll<HTMLDivElement>(".cell")].map((wrap, i) => {
    const element = wrap.querySelector(".viewport") as HTMLDivElement;
    const overlayParts: Record<string, HTMLElement> = {};
    for (const corner of ["tl", "tr", "bl", "br"]) {
      overlayParts[corner] = wrap.querySelector(`.ov-${corner}`) as HTMLElement;
    }
    const scrollbar = wrap.querySelector("input[type=range]") as HTMLInputElement;
    element.addEventListener("contextmenu", (e) => e.preventDefault());
    return { id: `vp${i}`, element, overlay: overlayParts, scrollbar, series: null,
             queue: null, startIndex: 0, cine: false };
  });
}

function wire(): void {
  state.cells.forEach((cell, i) => {
    cell.element.addEventListener(Enums.Events.IMAGE_RENDERED, () => {
      if (!state.firstImage && cell.series) {
        state.firstImage = true;
        performance.mark("cloudfilm:first-image");
        document.body.dataset.rendered = "true";
      }
      cell.element.dataset.rendered = "true";
    });
    cell.element.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => {
      const viewport = stackViewport(cell);
      if (viewport) cell.queue?.recentre(viewport.getCurrentImageIdIndex());
      overlay(cell);
      synchronise(cell);
    });
    cell.element.addEventListener(Enums.Events.VOI_MODIFIED, () => overlay(cell));
    cell.element.addEventListener(Enums.Events.CAMERA_MODIFIED, () => overlay(cell));
    cell.element.addEventListener("pointerdown", () => setActive(i));
    // The wheel scrolls a slice a notch (the tools' wheel binding ignored synthetic wheels).
    // When the page is busy Chromium folds queued wheel events into one whose delta is their
    // sum: count its notches (100 px, 3 lines) instead of its sign, or a fast spin loses
    // slices; a finer delta (a touchpad) still moves one.
    cell.element.addEventListener("wheel", (e) => {
      e.preventDefault();
      setActive(i);
      const px = e.deltaY * (e.deltaMode === 1 ? 100 / 3 : e.deltaMode === 2 ? 800 : 1);
      scrollBy(Math.sign(px) * Math.max(1, Math.round(Math.abs(px) / 100)));
    }, { passive: false });
    cell.scrollbar.addEventListener("input", () => {
      setActive(i);
      void stackViewport(cell)?.setImageIdIndex(Number(cell.scrollbar.value) - 1);
    });
  });
  for (const b of document.querySelectorAll<HTMLButtonElement>("[data-tool]")) {
    b.addEventListener("click", () => setTool(b.dataset.tool as string));
  }
  for (const b of document.querySelectorAll<HTMLButtonElement>("[data-preset]")) {
    b.addEventListener("click", () => preset(b.dataset.preset as string));
  }
  for (const b of document.querySelectorAll<HTMLButtonElement>("[data-transform]")) {
    b.addEventListener("click", () => transform(b.dataset.transform as string));
  }
  for (const b of document.querySelectorAll<HTMLButtonElement>("[data-layout]")) {
    b.addEventListener("click", () => setLayout(b.dataset.layout as string));
  }
  for (const b of document.querySelectorAll<HTMLButtonElement>(".thumb")) {
    b.addEventListener("click", () =>
      void show(state.active, b.dataset.study as string, b.dataset.series as string));
  }
  $("cine").addEventListener("click", cine);
  $("help-open").addEventListener("click", toggleHelp);
  $("help-close").addEventListener("click", toggleHelp);
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (($("help") as HTMLDialogElement).open) return; // Esc closes the card
    if ((e.target as HTMLElement).matches?.("input[type=text], textarea")) return;
    const action = KEYS[e.key] ?? KEYS[e.key.toLowerCase()];
    if (action) {
      e.preventDefault();
      action();
    }
  });
  window.addEventListener("resize", () => state.engine?.resize(true, true));
}

function tools(): void {
  for (const tool of LEFT_TOOLS) addTool(tool);
  const group = ToolGroupManager.createToolGroup(GROUP);
  if (!group) return;
  for (const tool of LEFT_TOOLS) group.addTool(tool.toolName);
  group.setToolActive(WindowLevelTool.toolName,
                      { bindings: [{ mouseButton: MouseBindings.Primary }] });
  group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  for (const tool of [LengthTool, AngleTool, RectangleROITool, EllipticalROITool, ProbeTool]) {
    group.setToolPassive(tool.toolName);
  }
  for (const cell of state.cells) group.addViewport(cell.id, ENGINE);
}

async function main(): Promise<void> {
  say(L("starting"));
  const cpu = useCpuRendering();
  document.body.dataset.renderer = cpu ? "cpu" : "gpu";
  if (cpu) useSoftwareCanvases();
  await coreInit({ rendering: { useCPURendering: cpu } } as any);
  eventTarget.addEventListener(Enums.Events.IMAGE_LOADED, function first() {
    performance.mark("cloudfilm:first-decoded");
    eventTarget.removeEventListener(Enums.Events.IMAGE_LOADED, first);
  });
  loaderInit({ maxWebWorkers: Math.max(1, Math.min(navigator.hardwareConcurrency || 2, 4)) });
  // ?decode=workers|cornerstone: Cornerstone's own ways, for comparisons (inthread.ts)
  const decodeMode = new URLSearchParams(location.search).get("decode");
  if (decodeMode !== "workers") decodeUncompressedInThread(decodeMode !== "cornerstone");
  // The first series' metadata (asked for by boot.ts) is read into Cornerstone's metadata
  // only once its loader is set up: earlier, its images had no pixel module.
  const current0 = config.studies[0];
  const first0 = current0?.series.find((s) => s.thumb);
  if (current0 && first0) void seriesOf(current0.uid, first0.uid).catch(() => {});
  // Before any viewport is enabled: the tools attach their mouse listeners to elements as
  // they are enabled.
  toolsInit();
  buildCells();
  const engine = new RenderingEngine(ENGINE);
  state.engine = engine;
  engine.setViewports(state.cells.map((cell) => ({
    viewportId: cell.id,
    type: Enums.ViewportType.STACK,
    element: cell.element,
    defaultOptions: { background: [0, 0, 0] as Types.Point3 },
  })));
  tools();
  wire();
  setActive(0);
  performance.mark("cloudfilm:cornerstone");
  const current = config.studies[0];
  const firstSeries = current?.series.find((s) => s.thumb);
  say("");
  if (!current || !firstSeries) {
    say(L("no_images"), "error");
    return;
  }
  await show(0, current.uid, firstSeries.uid);
  setLayout(config.layout);
  initAi({ // AI results beside the images (ai_overlay.ts)
    study: current.uid, seriesUids: current.series.filter((s) => s.thumb).map((s) => s.uid),
    seriesOf, show, render: (id) => state.engine?.getViewport(id)?.render(),
    cells: () => state.cells.map((c) => ({ viewportId: c.id, series: c.series })),
    scrollTo: async (i, n) => { await stackViewport(state.cells[i])?.setImageIdIndex(n); },
  });
  // Warm the other series' metadata (one request each) once the first image is up.
  for (const st of config.studies) {
    for (const s of st.series) if (s.thumb) void seriesOf(st.uid, s.uid).catch(() => {});
  }
}

// For tests and the bench: what the viewer shows, and a way to drive it without pixels.
(window as any).cloudfilmViewer = {
  state: () => ({
    refused: state.refused,
    layout: state.layout,
    cells: state.cells.map((c) => {
      const vp = stackViewport(c);
      const props = vp?.getProperties();
      return {
        series: c.series?.uid ?? null,
        index: vp && c.series ? vp.getCurrentImageIdIndex() + 1 : 0,
        count: c.series?.slices.length ?? 0,
        loaded: c.queue?.loaded ?? 0,
        voi: props?.voiRange ?? null,
        hidden: (c.element.parentElement as HTMLElement).hidden,
      };
    }),
  }),
  scrollTo: async (cell: number, n: number) => {
    const vp = state.cells[cell] && stackViewport(state.cells[cell]);
    if (vp) await vp.setImageIdIndex(n - 1);
  },
  /** Page coordinates of image pixel (column, row) in a viewport. */
  pixelToPage: (cell: number, column: number, row: number) => {
    const c = state.cells[cell];
    const vp = c && stackViewport(c);
    if (!vp) return null;
    const world = csUtils.imageToWorldCoords(vp.getCurrentImageId(), [column, row]);
    const [x, y] = vp.worldToCanvas(world);
    const rect = vp.canvas.getBoundingClientRect();
    return [rect.left + x, rect.top + y];
  },
  /** The decoded pixels of the image on screen (the codec's output, for the tests):
   * the typed array's bytes in base64 and its type. */
  pixels: (cell: number) => {
    const c = state.cells[cell];
    const vp = c && stackViewport(c);
    const image = vp ? cache.getImage(vp.getCurrentImageId()) : undefined;
    if (!image) return null;
    const px = image.getPixelData() as unknown as ArrayBufferView;
    const bytes = new Uint8Array(px.buffer, px.byteOffset, px.byteLength);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return { rows: image.rows, columns: image.columns, type: px.constructor.name,
             scaled: Boolean((image as any).preScale?.scaled), data: btoa(binary) };
  },
  ai: aiState,
  /** Uncompressed frames decoded on the page's thread (inthread.ts), by which pass. */
  decodedHere: () => ({ ...decodedHere }),
  measurements: () =>
    (annotation.state.getAllAnnotations() as any[]).map((a) => ({
      tool: a.metadata?.toolName,
      stats: Object.values(a.data?.cachedStats ?? {})[0] ?? null,
    })),
};

main().catch((err) => {
  console.error(err);
  say(L("load_failed"), "error");
});
