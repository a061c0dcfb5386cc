// Frame bytes fetched by the viewer itself (WADO-RS, several frames of one instance in one
// request), kept until Cornerstone decodes them: loader.ts hands them to Cornerstone's
// WADO-RS loader through its compressed-frame registry, so the loader never goes to the
// network for a frame we already hold. No Cornerstone here (boot.ts uses it).
export const ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*";

export class HttpError extends Error {
  constructor(readonly status: number, url: string) {
    super(`${status} ${url}`);
  }
}

export type Part = { data: Uint8Array; transferSyntax: string };

/** Transfer syntaxes whose frames are the samples themselves (little endian). */
export const UNCOMPRESSED = new Set(["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]);

const pending = new Map<string, Promise<Part>>(); // by frame URL
const ready = new Map<string, Part>(); // arrived, not yet decoded

/** Where ``needle`` first occurs in ``hay`` at or after ``from`` (Horspool: a frame's
 * samples are skipped a needle's length at a time, instead of stopping at every byte equal
 * to the needle's first, which in 16-bit CT samples is one byte in a few hundred). */
function indexOf(hay: Uint8Array, needle: Uint8Array, from: number): number {
  const m = needle.length;
  const last = m - 1;
  const shift = new Int32Array(256).fill(m);
  for (let k = 0; k < last; k += 1) shift[needle[k]] = last - k;
  for (let i = from; i + m <= hay.length; i += shift[hay[i + last]]) {
    let k = last;
    while (k >= 0 && hay[i + k] === needle[k]) k -= 1;
    if (k < 0) return i;
  }
  return -1;
}

const ascii = new TextDecoder("latin1");

/** The parts of a multipart/related body, in order (RFC 2046). */
export function parts(body: ArrayBuffer, contentType: string): Part[] {
  const bytes = new Uint8Array(body);
  const found = /boundary="?([^";]+)"?/i.exec(contentType);
  if (!found) throw new Error(`not multipart: ${contentType}`);
  const delimiter = new TextEncoder().encode(`--${found[1]}`);
  const out: Part[] = [];
  let at = indexOf(bytes, delimiter, 0);
  while (at !== -1) {
    const headersEnd = indexOf(bytes, new Uint8Array([13, 10, 13, 10]), at);
    if (headersEnd === -1) break; // the closing delimiter
    const headers = ascii.decode(bytes.subarray(at, headersEnd));
    const start = headersEnd + 4;
    const next = indexOf(bytes, delimiter, start);
    if (next === -1) throw new Error("multipart body without its closing delimiter");
    const found = /transfer-syntax=([0-9.]+)/i.exec(headers);
    const transferSyntax = found ? found[1] : "1.2.840.10008.1.2.1";
    // Uncompressed samples are read in place (their decoder honours the offset); a codec's
    // input is a copy, since some read from the start of their buffer.
    const end = next - 2; // the CRLF before the delimiter
    out.push({ data: UNCOMPRESSED.has(transferSyntax) ? bytes.subarray(start, end)
                                                      : bytes.slice(start, end),
               transferSyntax });
    at = next;
  }
  return out;
}

/** Frames ``numbers`` of one instance (``instance``: its URL up to ``/frames``), one
 * request; each frame's promise is registered so that nobody asks for it twice. */
export function fetchFrames(instance: string, numbers: number[]): Promise<Part>[] {
  const url = `${instance}/frames/${numbers.join(",")}`;
  const all = fetch(url, { headers: { Accept: ACCEPT }, credentials: "same-origin" })
    .then(async (r) => {
      if (!r.ok) throw new HttpError(r.status, url);
      const got = parts(await r.arrayBuffer(), r.headers.get("content-type") ?? "");
      if (got.length !== numbers.length) throw new HttpError(502, url);
      return got;
    });
  return numbers.map((n, k) => {
    const one = all.then((got) => got[k]);
    const key = `${instance}/frames/${n}`;
    pending.set(key, one);
    one.then((part) => { if (pending.get(key) === one) ready.set(key, part); },
             () => pending.delete(key));
    return one;
  });
}

/** The frame at ``url`` if it was asked for (and not yet taken). */
export function held(url: string): Promise<Part> | undefined {
  return pending.get(url);
}

/** The bytes of the frame at ``url`` if they have arrived. */
export function arrived(url: string): Part | undefined {
  return ready.get(url);
}

/** Forget a frame once Cornerstone holds it decoded. */
export function release(url: string): void {
  pending.delete(url);
  ready.delete(url);
}

/** Bytes of the frames that have arrived and wait for a decoder. */
function waiting(): number {
  let n = 0;
  for (const part of ready.values()) n += part.data.byteLength;
  return n;
}

let prefetching = true;

/** Frames asked for ahead of the viewer's queue (boot.ts, while Cornerstone loads): ``urls``
 * in the order given, ``inFlight`` requests at a time, until ``budget`` bytes wait for a
 * decoder or the viewer's own queue starts (``stopPrefetch``). The frames stay registered
 * as asked for, so the queue takes them instead of asking again; a refusal or failure
 * stops the prefetch and is met again (and reported) by the queue. */
export function prefetch(urls: string[], inFlight: number, budget: number): void {
  let next = 0;
  let running = 0;
  const pump = (): void => {
    while (prefetching && running < inFlight && next < urls.length && waiting() < budget) {
      const url = urls[next++];
      if (pending.has(url)) continue;
      const [instance, frame] = instanceOf(url);
      running += 1;
      fetchFrames(instance, [frame])[0].then(() => {
        running -= 1;
        pump();
      }, () => {
        prefetching = false;
      });
    }
  };
  pump();
}

/** The viewer's queue has started: it asks for what is left. */
export function stopPrefetch(): void {
  prefetching = false;
}

export function instanceOf(url: string): [string, number] {
  const cut = url.lastIndexOf("/frames/");
  return [url.slice(0, cut), Number(url.slice(cut + 8))];
}
