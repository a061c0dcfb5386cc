// Frames of a series fetched centre-out from the slice on screen, a few requests at a time
// (several frames of a multi-frame object in one request), with retries: the first image
// comes before the series is complete, and scrolling moves the centre. The bytes go to
// Cornerstone's WADO-RS loader through its compressed-frame registry (frames.ts), which
// decodes them in its workers (uncompressed frames on this thread: inthread.ts). A 401/403 (the grant expired or was revoked, the session
// ended) stops every queue and tells the page why; other failures are retried, then left
// for the viewport.
import { Enums, imageLoader, metaData } from "@cornerstonejs/core";
import {
  HttpError, arrived, fetchFrames, held, instanceOf, release, stopPrefetch,
} from "./frames";

export type Refusal = { status: number; imageId: string };

const RETRIES = 3;
const BATCH = 8; // frames of one multi-frame object a request
const DECODING = 6; // frames fetched and waiting for a decoder, at most

const url = (imageId: string): string => imageId.replace(/^wadors:/, "");

// Cornerstone asks its metadata providers for a frame's bytes before going to the network.
metaData.addProvider((type: string, imageId: string) => {
  if (type !== "compressedFrameData" || typeof imageId !== "string") return undefined;
  const part = arrived(url(imageId));
  return part ? { pixelData: part.data, transferSyntaxUid: part.transferSyntax } : undefined;
}, 10000);

/** Decode a frame that has arrived (or is on its way) into Cornerstone's cache. */
export async function decode(imageId: string): Promise<void> {
  const fetched = held(url(imageId));
  if (fetched) await fetched;
  try {
    await imageLoader.loadAndCacheImage(imageId, {
      priority: 0, requestType: Enums.RequestType.Interaction } as any);
  } finally {
    release(url(imageId));
  }
}

export class FrameQueue {
  private pending: number[] = [];
  private inFlight = 0;
  private decoding = 0;
  private done = new Set<number>();
  private asked = new Set<number>();
  private stopped = false;
  private complete = false;
  private centre = 0;

  constructor(
    private readonly imageIds: string[],
    private readonly maxInFlight: number,
    private readonly onRefused: (r: Refusal) => void,
    private readonly onComplete: () => void,
  ) {}

  get loaded(): number {
    return this.done.size;
  }

  get total(): number {
    return this.imageIds.length;
  }

  /** Load around ``index``: nearest first, alternating after and before. */
  start(index: number): void {
    stopPrefetch(); // boot.ts's frames ahead of Cornerstone: this queue asks from here on
    this.centre = index;
    const n = this.imageIds.length;
    const order: number[] = [];
    for (let d = 0; order.length < n && d < n; d += 1) {
      for (const i of d === 0 ? [index] : [index + d, index - d]) {
        if (i >= 0 && i < n && !this.asked.has(i)) order.push(i);
      }
    }
    this.pending = order;
    this.pump();
  }

  /** The user scrolled: what is left is fetched around the new slice. */
  recentre(index: number): void {
    if (!this.stopped && Math.abs(index - this.centre) > 2) this.start(index);
  }

  stop(): void {
    this.stopped = true;
    this.pending = [];
  }

  /** The next request: a frame, and the frames of the same object queued after it. */
  private take(): number[] {
    const i = this.pending.shift() as number;
    const [instance] = instanceOf(url(this.imageIds[i]));
    const batch = [i];
    for (let k = 0; k < this.pending.length && batch.length < BATCH; ) {
      const j = this.pending[k];
      if (!this.asked.has(j) && instanceOf(url(this.imageIds[j]))[0] === instance) {
        batch.push(j);
        this.pending.splice(k, 1);
      } else k += 1;
    }
    return batch;
  }

  private pump(): void {
    while (!this.stopped && this.inFlight < this.maxInFlight &&
           this.decoding < DECODING && this.pending.length) {
      if (this.asked.has(this.pending[0])) {
        this.pending.shift();
        continue;
      }
      const batch = this.take();
      for (const i of batch) this.asked.add(i);
      this.inFlight += 1;
      void this.fetch(batch, 0).finally(() => {
        this.inFlight -= 1;
        this.pump();
      });
    }
  }

  private async fetch(batch: number[], attempt: number): Promise<void> {
    const ids = batch.map((i) => this.imageIds[i]);
    // A frame boot.ts (or the viewport) already asked for is not asked for again.
    const wanted = ids.filter((id) => !held(url(id)));
    if (wanted.length) {
      const [instance] = instanceOf(url(wanted[0]));
      for (const p of fetchFrames(instance, wanted.map((id) => instanceOf(url(id))[1]))) {
        p.catch(() => {});
      }
    }
    try {
      await Promise.all(ids.map((id) => held(url(id))));
    } catch (err) {
      if (this.stopped) return;
      const status = err instanceof HttpError ? err.status : 0;
      if (status === 401 || status === 403) {
        this.stop();
        this.onRefused({ status, imageId: ids[0] });
        return;
      }
      if (attempt + 1 < RETRIES && status !== 404 && status !== 406) {
        await new Promise((r) => setTimeout(r, 300 * 2 ** attempt));
        return this.fetch(batch, attempt + 1);
      }
      for (const i of batch) this.done.add(i); // given up: the viewport shows its error
      this.check();
      return;
    }
    // Arrived: decoding goes on while the next request is sent.
    this.decoding += 1;
    void Promise.allSettled(ids.map((id) => decode(id))).then(() => {
      this.decoding -= 1;
      for (const i of batch) this.done.add(i);
      this.check();
      this.pump();
    });
  }

  private check(): void {
    if (!this.complete && this.done.size === this.imageIds.length) {
      this.complete = true;
      this.onComplete();
    }
  }
}
