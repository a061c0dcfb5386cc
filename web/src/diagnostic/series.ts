// A series from its precomputed metadata (one request): image ids in slice order, one a
// frame for multi-frame objects, and what the overlays and the synchronised scroll need.
import { wadors } from "@cornerstonejs/dicom-image-loader";

type Json = Record<string, { vr?: string; Value?: any[] }>;

export type Slice = { imageId: string; position: number | null; thickness: number | null };

export type Series = {
  study: string;
  uid: string;
  slices: Slice[];
  frameOfReference: string;
  modality: string;
  description: string;
  patient: string;
  patientId: string;
  sexAge: string;
  studyDate: string;
  studyDescription: string;
  institution: string;
  multiFrame: boolean;
  fps: number;
};

export class HttpError extends Error {
  constructor(readonly status: number, url: string) {
    super(`${status} ${url}`);
  }
}

function first(doc: Json, tag: string): any {
  return doc[tag]?.Value?.[0];
}

function text(doc: Json, tag: string): string {
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

export async function loadSeries(base: string, study: string, series: string): Promise<Series> {
  const url = `${base}/studies/${study}/series/${series}/metadata`;
  const response = await fetch(url, { headers: { Accept: "application/dicom+json" } });
  if (!response.ok) throw new HttpError(response.status, url);
  const docs = (await response.json()) as Json[];
  const firstDoc = docs[0] ?? {};
  const iop = numbers(firstDoc, "00200037");
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
  const slices: Slice[] = [];
  let multiFrame = false;
  for (const { doc, pos } of ordered) {
    const sop = text(doc, "00080018");
    const frames = Number(first(doc, "00280008") ?? 1) || 1;
    multiFrame ||= frames > 1;
    const thickness = first(doc, "00180050");
    for (let f = 1; f <= frames; f += 1) {
      const imageId =
        `wadors:${location.origin}${base}/studies/${study}/series/${series}` +
        `/instances/${sop}/frames/${f}`;
      wadors.metaDataManager.add(imageId, doc as any);
      slices.push({
        imageId,
        position: frames === 1 ? pos : null,
        thickness: thickness != null ? Number(thickness) : null,
      });
    }
  }
  const age = text(firstDoc, "00101010");
  const frameTime = Number(first(firstDoc, "00181063") ?? 0);
  const cineRate = Number(first(firstDoc, "00180040") ?? 0);
  return {
    study,
    uid: series,
    slices,
    frameOfReference: text(firstDoc, "00200052"),
    modality: text(firstDoc, "00080060"),
    description: text(firstDoc, "0008103E"),
    patient: text(firstDoc, "00100010").replace(/\^/g, " "),
    patientId: text(firstDoc, "00100020"),
    sexAge: [text(firstDoc, "00100040"), age].filter(Boolean).join(" "),
    studyDate: text(firstDoc, "00080020").replace(/^(\d{4})(\d\d)(\d\d)$/, "$1-$2-$3"),
    studyDescription: text(firstDoc, "00081030"),
    institution: text(firstDoc, "00080080"),
    multiFrame,
    fps: cineRate || (frameTime ? Math.round(1000 / frameTime) : 15),
  };
}
