// The viewer page's only script tag. Cornerstone is megabytes of script: the page has the
// browser fetch and compile it (modulepreload) while this asks for the first series'
// metadata and then the slice the viewer opens on, draws that slice as soon as it arrives
// when it needs no codec (preview.ts), and goes on asking for the series' next frames
// centre-out. Only then does it run the viewer's bundle (main.ts), whose evaluation is one
// long task that would otherwise hold the first image back; main.ts takes the metadata and
// the frames from here (frames.ts).
import { fetchFrames, HttpError, instanceOf, prefetch } from "./frames";
import { type Json, metadataUrl, orderImages, startIndex } from "./order";
import { drawPreview } from "./preview";

type Boot = { study: string; series: string; docs: Promise<Json[]> };

// Frame bytes fetched ahead of Cornerstone and not yet decoded, at most (a 512x512 CT
// slice is 0.5 MB): enough to cover its start-up on a fast link, bounded for long series.
const PREFETCH_BYTES = 96 * 1024 * 1024;
// The bundle runs at the latest this long after boot, first slice drawn or not.
const BUNDLE_LATEST_MS = 1500;

let viewerStarted = false;

/** Run the viewer's bundle (its URL: this script tag's data-viewer), once. */
function startViewer(): void {
  if (viewerStarted) return;
  viewerStarted = true;
  const src = document.querySelector<HTMLScriptElement>("script[data-viewer]")?.dataset.viewer;
  if (src) void import(/* @vite-ignore */ src);
}

/** After the next frame is on screen: the drawn slice shows before the bundle runs. */
function startViewerAfterPaint(): void {
  requestAnimationFrame(() => setTimeout(startViewer, 0));
}

function start(): Boot | null {
  const node = document.getElementById("viewer-config");
  if (!node) return null;
  const config = JSON.parse(node.textContent || "{}");
  const study = config.studies?.[0];
  const series = study?.series?.find((s: { thumb: string | null }) => s.thumb);
  if (!study || !series) return null;
  const url = metadataUrl(config.dicomweb, study.uid, series.uid);
  const docs = fetch(url, { headers: { Accept: "application/dicom+json" } }).then((r) => {
    if (!r.ok) throw new HttpError(r.status, url);
    return r.json() as Promise<Json[]>;
  });
  void docs.then((list) => {
    const images = orderImages(config.dicomweb, study.uid, series.uid, list);
    const at = startIndex(images.length);
    const shown = images[at];
    if (!shown) return startViewer();
    // The rest, nearest first, in the order the viewer's queue will want them (loader.ts),
    // asked for once the first slice is here (the server answers it alone first).
    const order: string[] = [];
    for (let d = 1; d < images.length; d += 1) {
      for (const i of [at + d, at - d]) if (i >= 0 && i < images.length) order.push(images[i].url);
    }
    const rest = (): void => prefetch(order, config.inFlight ?? 6, PREFETCH_BYTES);
    const [instance, frame] = instanceOf(shown.url);
    fetchFrames(instance, [frame])[0].then((part) => {
      rest();
      const viewport = document.querySelector<HTMLElement>(".cell .viewport");
      if (viewport && drawPreview(viewport, shown.doc, part)) startViewerAfterPaint();
      else startViewer();
    }, startViewer); // the queue meets the failure again and reports it
  }, startViewer);
  return { study: study.uid, series: series.uid, docs };
}

(window as any).cloudfilmBoot = start();
if (!(window as any).cloudfilmBoot) startViewer();
else setTimeout(startViewer, BUNDLE_LATEST_MS);
