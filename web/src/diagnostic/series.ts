// A series from its precomputed metadata (one request): image ids in slice order, one a
// frame for multi-frame objects, and what the overlays and the synchronised scroll need.
import { wadors } from "@cornerstonejs/dicom-image-loader";
import { HttpError } from "./frames";
import { type Json, first, metadataUrl, orderImages, text } from "./order";

export { HttpError };

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

async function fetchDocs(base: string, study: string, series: string): Promise<Json[]> {
  const url = metadataUrl(base, study, series);
  const response = await fetch(url, { headers: { Accept: "application/dicom+json" } });
  if (!response.ok) throw new HttpError(response.status, url);
  return (await response.json()) as Json[];
}

/** ``early``: the metadata already asked for (boot.ts), if it is this series'. */
export async function loadSeries(base: string, study: string, series: string,
                                 early?: Promise<Json[]>): Promise<Series> {
  const docs = await (early ?? fetchDocs(base, study, series));
  const firstDoc = docs[0] ?? {};
  const slices: Slice[] = [];
  let multiFrame = false;
  for (const image of orderImages(base, study, series, docs)) {
    const imageId = `wadors:${image.url}`;
    multiFrame ||= image.frames > 1;
    wadors.metaDataManager.add(imageId, image.doc as any);
    const thickness = first(image.doc, "00180050");
    slices.push({ imageId, position: image.position,
                  thickness: thickness != null ? Number(thickness) : null });
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
