// The first slice drawn by boot.ts, before Cornerstone has loaded: an uncompressed
// monochrome frame needs no codec, only its modality LUT (rescale) and the header's window,
// the same defaults Cornerstone's stack viewport opens with, fitted the same way (whole
// image, centred, square pixels unless the spacing says otherwise). It sits over the first
// viewport, takes no input, and goes as soon as Cornerstone has drawn that viewport
// (its render event) or the viewer is refused. Compressed frames wait for Cornerstone's
// codecs. No Cornerstone here.
import { type Part, UNCOMPRESSED } from "./frames";
import { type Json, first } from "./order";

const RENDERED = "CORNERSTONE_IMAGE_RENDERED";

function num(doc: Json, tag: string, fallback: number): number {
  const v = Number(first(doc, tag));
  return Number.isFinite(v) && first(doc, tag) != null ? v : fallback;
}

/** The frame's stored values as numbers, or null if this frame is not for the preview. */
function samples(doc: Json, part: Part): ArrayLike<number> | null {
  if (!UNCOMPRESSED.has(part.transferSyntax)) return null;
  const photometric = String(first(doc, "00280004") ?? "");
  if (num(doc, "00280002", 1) !== 1 || !/^MONOCHROME[12]$/.test(photometric)) return null;
  const rows = num(doc, "00280010", 0);
  const cols = num(doc, "00280011", 0);
  const bits = num(doc, "00280100", 0);
  const signed = num(doc, "00280103", 0) === 1;
  const n = rows * cols;
  if (!n || part.data.byteLength < n * (bits / 8)) return null;
  // 16-bit samples need an even offset: a frame read in place may start at an odd one.
  const data = bits === 16 && part.data.byteOffset % 2 ? part.data.slice() : part.data;
  const { buffer, byteOffset } = data;
  if (bits === 16) {
    return signed ? new Int16Array(buffer, byteOffset, n) : new Uint16Array(buffer, byteOffset, n);
  }
  if (bits === 8) return signed ? new Int8Array(buffer, byteOffset, n) : data;
  return null;
}

/** Draw ``part`` (the frame of ``doc``) over ``viewport``; false when it cannot. */
export function drawPreview(viewport: HTMLElement, doc: Json, part: Part): boolean {
  const raw = samples(doc, part);
  if (!raw || viewport.dataset.rendered === "true") return false;
  const rows = num(doc, "00280010", 0);
  const cols = num(doc, "00280011", 0);
  const slope = num(doc, "00281053", 1);
  const intercept = num(doc, "00281052", 0);
  // The window: the header's first, else the image's range (Cornerstone does the same).
  let width = num(doc, "00281051", NaN);
  let centre = num(doc, "00281050", NaN);
  if (!(width > 0) || !Number.isFinite(centre)) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < raw.length; i += 1) {
      const v = raw[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    lo = lo * slope + intercept;
    hi = hi * slope + intercept;
    width = Math.max(hi - lo, 1);
    centre = (hi + lo) / 2;
  }
  const lower = centre - width / 2;
  const scale = 255 / width;
  const invert = first(doc, "00280004") === "MONOCHROME1";
  const image = new ImageData(cols, rows);
  const px = image.data;
  for (let i = 0, j = 0; i < raw.length; i += 1, j += 4) {
    let g = ((raw[i] * slope + intercept) - lower) * scale;
    g = g < 0 ? 0 : g > 255 ? 255 : g;
    if (invert) g = 255 - g;
    px[j] = px[j + 1] = px[j + 2] = g;
    px[j + 3] = 255;
  }
  const source = document.createElement("canvas");
  source.width = cols;
  source.height = rows;
  (source.getContext("2d") as CanvasRenderingContext2D).putImageData(image, 0, 0);

  const ratio = window.devicePixelRatio || 1;
  const box = viewport.getBoundingClientRect();
  if (box.width < 2 || box.height < 2) return false;
  const canvas = document.createElement("canvas");
  canvas.className = "boot-preview";
  canvas.width = Math.round(box.width * ratio);
  canvas.height = Math.round(box.height * ratio);
  const spacing = (doc["00280030"]?.Value ?? [1, 1]).map(Number); // row, column spacing
  const aspect = spacing[0] > 0 && spacing[1] > 0 ? spacing[0] / spacing[1] : 1;
  const fit = Math.min(canvas.width / cols, canvas.height / (rows * aspect));
  const w = cols * fit;
  const h = rows * aspect * fit;
  const g = canvas.getContext("2d") as CanvasRenderingContext2D;
  g.fillStyle = "#000";
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.imageSmoothingEnabled = true;
  g.drawImage(source, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  canvas.setAttribute("aria-hidden", "true");
  viewport.insertAdjacentElement("afterend", canvas);
  // Gone at Cornerstone's first render of the viewport, or when the viewer is refused
  // (main.ts marks the body: a grant that ended takes the images off the screen).
  const refused = new MutationObserver(() => {
    if (document.body.dataset.refused) done();
  });
  const done = (): void => {
    canvas.remove();
    viewport.removeEventListener(RENDERED, done);
    refused.disconnect();
  };
  viewport.addEventListener(RENDERED, done);
  refused.observe(document.body, { attributes: true, attributeFilter: ["data-refused"] });
  performance.mark("cloudfilm:first-preview");
  // The frame that paints it starts with this callback (the bundle runs after it): the time
  // the slice is on screen, which the page itself cannot poll while the bundle runs.
  requestAnimationFrame(() => performance.mark("cloudfilm:first-preview-frame"));
  document.body.dataset.preview = "true";
  return true;
}
