// Loaded before the viewer's bundle (Cornerstone is megabytes of script to parse): asks for
// the first series' metadata and then the slice the viewer opens on, so the server works
// while the browser is still starting Cornerstone. main.ts takes both from here.
import { fetchFrames, HttpError, instanceOf } from "./frames";
import { type Json, metadataUrl, orderImages, startIndex } from "./order";

type Boot = { study: string; series: string; docs: Promise<Json[]> };

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
    const shown = images[startIndex(images.length)];
    if (shown) {
      const [instance, frame] = instanceOf(shown.url);
      for (const p of fetchFrames(instance, [frame])) p.catch(() => {}); // the queue reports
    }
  }, () => {});
  return { study: study.uid, series: series.uid, docs };
}

(window as any).cloudfilmBoot = start();
