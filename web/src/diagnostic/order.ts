// A series' instances in slice order, from its metadata (DICOM JSON), and the frame URL
// each image is read from. No Cornerstone here: boot.ts uses it before Cornerstone loads.
export type Json = Record<string, { vr?: string; Value?: any[] }>;

export function first(doc: Json, tag: string): any {
  return doc[tag]?.Value?.[0];
}

export function text(doc: Json, tag: string): string {
  const v = first(doc, tag);
  if (v == null) return "";
  if (typeof v === "object") return String(v.Alphabetic ?? v.Ideographic ?? "");
  return String(v);
}

function numbers(doc: Json, tag: string): number[] | null {
  const v = doc[tag]?.Value;
  return Array.isArray(v) ? v.map(Number) : null;
}

function cross(a: number[], b: number[]): number[] {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

export type Image = { url: string; doc: Json; position: number | null; frames: number };

export function metadataUrl(base: string, study: string, series: string): string {
  return `${base}/studies/${study}/series/${series}/metadata`;
}

/** One entry a frame (multi-frame objects give several), head to feet by position along
 * the slice normal, else by instance number. */
export function orderImages(base: string, study: string, series: string,
                            docs: Json[]): Image[] {
  const iop = numbers(docs[0] ?? {}, "00200037");
  const normal = iop && iop.length === 6 ? cross(iop.slice(0, 3), iop.slice(3)) : null;
  const along = (doc: Json): number | null => {
    const ipp = numbers(doc, "00200032");
    if (!ipp || !normal) return null;
    return ipp[0] * normal[0] + ipp[1] * normal[1] + ipp[2] * normal[2];
  };
  const ordered = docs
    .map((doc) => ({ doc, pos: along(doc), num: Number(first(doc, "00200013") ?? 0) }))
    .sort((a, b) =>
      a.pos != null && b.pos != null && a.pos !== b.pos ? b.pos - a.pos : a.num - b.num,
    );
  const out: Image[] = [];
  for (const { doc, pos } of ordered) {
    const sop = text(doc, "00080018");
    const frames = Number(first(doc, "00280008") ?? 1) || 1;
    for (let f = 1; f <= frames; f += 1) {
      out.push({
        url: `${location.origin}${base}/studies/${study}/series/${series}/instances/${sop}` +
          `/frames/${f}`,
        doc,
        position: frames === 1 ? pos : null,
        frames,
      });
    }
  }
  return out;
}

/** The slice a series opens on. */
export function startIndex(count: number): number {
  return Math.floor(count / 2);
}
