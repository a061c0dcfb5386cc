// AI results beside the images (issue 19): the study's finding sets (current version first,
// earlier ones reachable), the chosen set's SEG over the stack that shows its source series
// (Cornerstone's labelmap with WebGL; under the CPU renderer a canvas of its own, ai_canvas.ts;
// toggle, opacity), its SR findings as a list (a click jumps to the
// slice), and the doctor's confirm / reject. Everything is marked "AI-generated, not a
// diagnosis" by the panel's markup (_ai_panel.html.j2). Reads go to /workstation/ai/data,
// where the access policy decides and audits each like any read of the study.
//
// main.ts only calls initAi() once and aiSeriesShown() after a series is put in a viewport.
import { imageLoader } from "@cornerstonejs/core";
import { Enums as ToolEnums, segmentation } from "@cornerstonejs/tools";
import { CanvasOverlay, type Runs } from "./ai_canvas";
import "./ai_overlay.css";
import { useCpuRendering } from "./backend";

const BASE = "/workstation/ai/data";
const COLOUR: [number, number, number, number] = [255, 0, 255, 255]; // magenta: no grey
const LABELMAP = ToolEnums.SegmentationRepresentations.Labelmap;

type Finding = { label: string; site: string; diameter_mm: number; score: number;
                 sop_instance_uid: string; row: number; column: number };
type FindingSet = { workitem_uid: string; algorithm: string; algorithm_version: string;
                    version: number; current: boolean; created_at: string; review: string;
                    reviewer_name: string; reviewed_at: string | null;
                    sr_sop_instance_uid: string; seg_sop_instance_uid: string;
                    findings: Finding[] };
type Mask = { sop_instance_uid: string; segment: number; runs: [number, number, number][] };
type SeriesLike = { study: string; uid: string; slices: { imageId: string }[] };

export type AiHost = {
  study: string;
  seriesUids: string[];
  seriesOf: (study: string, uid: string) => Promise<SeriesLike>;
  cells: () => { viewportId: string; series: SeriesLike | null }[];
  show: (cell: number, study: string, uid: string, index: number) => Promise<void>;
  scrollTo: (cell: number, index: number) => Promise<void>;
  render: (viewportId: string) => void;
};

const ai = {
  host: null as AiHost | null,
  sets: [] as FindingSet[],
  chosen: null as FindingSet | null,
  source: null as SeriesLike | null, // the series the chosen set's findings are on
  made: new Map<string, string[]>(), // segmentation id -> its labelmap image ids
  attached: new Map<string, string>(), // viewport id -> segmentation id shown there
  visible: true,
  opacity: 0.5,
  renderMs: 0,
};

function panel(): HTMLElement | null {
  return document.getElementById("ai-panel");
}

function text(key: string): string {
  return panel()?.dataset[key] ?? key;
}

function csrf(): string {
  return document.querySelector<HTMLMetaElement>("meta[name=csrf-token]")?.content ?? "";
}

function sliceOf(series: SeriesLike, sop: string): number {
  return series.slices.findIndex((s) => s.imageId.includes(`/instances/${sop}/frames/`));
}

async function sourceOf(set: FindingSet): Promise<SeriesLike | null> {
  const host = ai.host as AiHost;
  const wanted = set.findings[0]?.sop_instance_uid;
  if (!wanted) return null;
  for (const uid of host.seriesUids) {
    try {
      const series = await host.seriesOf(host.study, uid);
      if (sliceOf(series, wanted) >= 0) return series;
    } catch {
      /* a series that does not load is not the source */
    }
  }
  return null;
}

// -- the labelmap ------------------------------------------------------------------------

const fetched = new Map<string, Mask[]>(); // SEG SOP instance UID -> its masks
const canvas = new CanvasOverlay(); // the overlay when Cornerstone renders on the CPU

async function masksOf(set: FindingSet): Promise<Mask[] | null> {
  const uid = set.seg_sop_instance_uid;
  if (!uid) return null;
  const known = fetched.get(uid);
  if (known) return known;
  const response = await fetch(`${BASE}/studies/${ai.host!.study}/seg/${uid}`,
                               { headers: { Accept: "application/json" } });
  if (!response.ok) return null;
  const { masks } = (await response.json()) as { masks: Mask[] };
  fetched.set(uid, masks);
  return masks;
}

function runsBySlice(masks: Mask[], source: SeriesLike): Map<number, Runs> {
  const bySlice = new Map<number, Runs>();
  for (const mask of masks) {
    const index = sliceOf(source, mask.sop_instance_uid);
    if (index < 0) continue;
    bySlice.set(index, [...(bySlice.get(index) ?? []), ...mask.runs]);
  }
  return bySlice;
}

async function labelmap(set: FindingSet, source: SeriesLike): Promise<string | null> {
  const id = `ai-${set.workitem_uid}`;
  if (ai.made.has(id)) return id;
  const masks = await masksOf(set);
  if (!masks) return null;
  const imageIds = source.slices.map((s) => s.imageId);
  const images = imageLoader.createAndCacheDerivedLabelmapImages(imageIds);
  for (const mask of masks) {
    const index = sliceOf(source, mask.sop_instance_uid);
    const image = images[index];
    if (!image) continue;
    const columns = image.columns;
    const voxels = image.voxelManager as any;
    for (const [row, first, end] of mask.runs) {
      for (let c = first; c < end; c += 1) voxels.setAtIndex(row * columns + c, mask.segment);
    }
  }
  segmentation.addSegmentations([{
    segmentationId: id,
    representation: { type: LABELMAP, data: { imageIds: images.map((i) => i.imageId) } },
  }]);
  ai.made.set(id, images.map((i) => i.imageId));
  return id;
}

function style(viewportId: string, id: string): void {
  // One segment a finding (numbered from 1, as the SEG's).
  const count = ai.sets.find((s) => `ai-${s.workitem_uid}` === id)?.findings.length ?? 0;
  for (let n = 1; n <= count; n += 1) {
    segmentation.config.color.setSegmentIndexColor(viewportId, id, n, COLOUR);
  }
  segmentation.segmentationStyle.setStyle({ type: LABELMAP, viewportId, segmentationId: id },
                                          { fillAlpha: ai.opacity, fillAlphaInactive: ai.opacity,
                                            renderOutline: true, outlineOpacity: 1 });
  segmentation.config.visibility.setSegmentationRepresentationVisibility(
    viewportId, { segmentationId: id, type: LABELMAP }, ai.visible);
}

/** The CPU renderer's overlay: the chosen set's runs painted over the source's viewports. */
async function attachCanvas(host: AiHost, set: FindingSet, source: SeriesLike): Promise<void> {
  const started = performance.now();
  const masks = await masksOf(set);
  canvas.runs = masks ? runsBySlice(masks, source) : new Map();
  canvas.visible = ai.visible;
  canvas.opacity = ai.opacity;
  const id = `ai-${set.workitem_uid}`;
  for (const cell of host.cells()) {
    if (masks && cell.series?.uid === source.uid) {
      canvas.attach(cell.viewportId);
      ai.attached.set(cell.viewportId, id);
    } else {
      canvas.detach(cell.viewportId);
      ai.attached.delete(cell.viewportId);
    }
  }
  if (masks) overlaid(started);
}

function overlaid(started: number): void {
  ai.renderMs = performance.now() - started;
  performance.mark("cloudfilm:ai-overlay");
  document.body.dataset.aiOverlay = "true";
}

/** Put the chosen set's labelmap on every viewport that shows its source series. */
async function attach(): Promise<void> {
  const host = ai.host;
  if (!host || !ai.chosen || !ai.source) return;
  if (useCpuRendering()) {
    await attachCanvas(host, ai.chosen, ai.source);
    return;
  }
  const started = performance.now();
  const id = await labelmap(ai.chosen, ai.source);
  for (const cell of host.cells()) {
    const shown = ai.attached.get(cell.viewportId);
    const wanted = cell.series?.uid === ai.source.uid ? id : null;
    if (shown && shown !== wanted) {
      segmentation.removeSegmentationRepresentations(cell.viewportId,
                                                     { segmentationId: shown });
      ai.attached.delete(cell.viewportId);
    }
    if (wanted && shown !== wanted) {
      await segmentation.addLabelmapRepresentationToViewport(cell.viewportId,
                                                             [{ segmentationId: wanted }]);
      ai.attached.set(cell.viewportId, wanted);
    }
    if (wanted) {
      style(cell.viewportId, wanted);
      host.render(cell.viewportId);
    }
  }
  if (id) overlaid(started);
}

function restyle(): void {
  if (useCpuRendering()) {
    canvas.visible = ai.visible;
    canvas.opacity = ai.opacity;
    canvas.paintAll();
    return;
  }
  for (const [viewportId, id] of ai.attached) {
    style(viewportId, id);
    ai.host?.render(viewportId);
  }
}

// -- the panel -----------------------------------------------------------------------------

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Record<string, string> = {},
                                                   content = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) node.setAttribute(k, v);
  if (content) node.textContent = content;
  return node;
}

function reviewLine(set: FindingSet): string {
  if (set.review === "confirmed") return `${text("confirmedBy")} ${set.reviewer_name}`;
  if (set.review === "rejected") return `${text("rejectedBy")} ${set.reviewer_name}`;
  return text("unreviewed");
}

function draw(): void {
  const root = panel();
  const set = ai.chosen;
  if (!root) return;
  const list = root.querySelector("#ai-findings") as HTMLElement;
  const status = root.querySelector("#ai-status") as HTMLElement;
  const versions = root.querySelector("#ai-version") as HTMLSelectElement;
  list.replaceChildren();
  versions.replaceChildren(...ai.sets.map((s) => el("option", { value: s.workitem_uid },
    `${text("versionWord")} ${s.version} · ${s.algorithm} ${s.algorithm_version}` +
    (s.current ? ` (${text("currentWord")})` : ` (${text("superseded")})`))));
  if (!set) return;
  versions.value = set.workitem_uid;
  status.textContent = reviewLine(set);
  status.dataset.review = set.review || "none";
  root.dataset.version = String(set.version);
  root.dataset.current = String(set.current);
  for (const b of root.querySelectorAll<HTMLButtonElement>("[data-review]")) {
    b.disabled = !set.current; // a superseded version is history
  }
  if (!set.findings.length) list.append(el("li", {}, text("none")));
  set.findings.forEach((f, n) => {
    const slice = ai.source ? sliceOf(ai.source, f.sop_instance_uid) : -1;
    const button = el("button", { type: "button", class: "ai-finding",
                                  "data-slice": String(slice + 1) },
      `${n + 1}. ${text(f.site) || f.site} · ${text("diameter")} ${f.diameter_mm.toFixed(1)} mm · ` +
      `${text("confidence")} ${Math.round(f.score * 100)}% · ${text("slice")} ` +
      `${slice >= 0 ? `${slice + 1}/${ai.source!.slices.length}` : "?"}`);
    button.addEventListener("click", () => void jump(f));
    const item = el("li");
    item.append(button);
    list.append(item);
  });
}

async function jump(f: Finding): Promise<void> {
  const host = ai.host;
  if (!host || !ai.source) return;
  const index = sliceOf(ai.source, f.sop_instance_uid);
  if (index < 0) return;
  if (host.cells()[0]?.series?.uid !== ai.source.uid) {
    await host.show(0, host.study, ai.source.uid, index);
  } else {
    await host.scrollTo(0, index);
  }
}

async function choose(uid: string): Promise<void> {
  ai.chosen = ai.sets.find((s) => s.workitem_uid === uid) ?? null;
  ai.source = ai.chosen ? await sourceOf(ai.chosen) : null;
  draw();
  await attach();
}

async function review(decision: string): Promise<void> {
  const set = ai.chosen;
  if (!set) return;
  const body = new URLSearchParams({ decision });
  const response = await fetch(`${BASE}/results/${set.sr_sop_instance_uid}/review`, {
    method: "POST", body, headers: { "X-CSRF-Token": csrf() } });
  if (!response.ok) return;
  const done = (await response.json()) as { review: string; reviewer_name: string };
  set.review = done.review;
  set.reviewer_name = done.reviewer_name;
  draw();
}

async function load(): Promise<void> {
  const root = panel();
  const host = ai.host;
  if (!root || !host) return;
  const response = await fetch(`${BASE}/studies/${host.study}`,
                               { headers: { Accept: "application/json" } });
  if (!response.ok) return; // no AI results shown rather than a broken page
  ai.sets = ((await response.json()) as { sets: FindingSet[] }).sets;
  root.hidden = ai.sets.length === 0;
  if (!ai.sets.length) return;
  const current = ai.sets.find((s) => s.current) ?? ai.sets[0];
  await choose(current.workitem_uid);
}

export function initAi(host: AiHost): void {
  ai.host = host;
  const root = panel();
  if (!root) return;
  (root.querySelector("#ai-version") as HTMLSelectElement).addEventListener(
    "change", (e) => void choose((e.target as HTMLSelectElement).value));
  (root.querySelector("#ai-show") as HTMLInputElement).addEventListener("change", (e) => {
    ai.visible = (e.target as HTMLInputElement).checked;
    restyle();
  });
  (root.querySelector("#ai-opacity") as HTMLInputElement).addEventListener("input", (e) => {
    ai.opacity = Number((e.target as HTMLInputElement).value) / 100;
    restyle();
  });
  for (const b of root.querySelectorAll<HTMLButtonElement>("[data-review]")) {
    b.addEventListener("click", () => void review(b.dataset.review as string));
  }
  void load().catch((err) => console.warn("AI results", err));
}

/** A series was put in a viewport: overlay the chosen set there if it is the source. */
export function aiSeriesShown(): void {
  if (ai.chosen) void attach().catch((err) => console.warn("AI overlay", err));
}

/** For tests and the bench. */
export function aiState(): Record<string, unknown> {
  return {
    sets: ai.sets.length,
    version: ai.chosen?.version ?? null,
    current: ai.chosen?.current ?? null,
    review: ai.chosen?.review ?? null,
    source: ai.source?.uid ?? null,
    attached: [...ai.attached.keys()],
    visible: ai.visible,
    opacity: ai.opacity,
    renderMs: ai.renderMs,
  };
}
