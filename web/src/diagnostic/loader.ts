// Frames of a series fetched centre-out from the slice on screen, a few at a time, with
// retries: the first image comes before the series is complete, and scrolling moves the
// centre. A 401/403 (the grant expired or was revoked, the session ended) stops every
// queue and tells the page why; other failures are retried, then left for the viewport.
import { imageLoader } from "@cornerstonejs/core";

export type Refusal = { status: number; imageId: string };

const RETRIES = 3;

function statusOf(err: unknown): number {
  const e = err as Record<string, any> | undefined;
  return Number(e?.status ?? e?.xhr?.status ?? e?.error?.status ?? e?.request?.status ?? 0);
}

function frameUrl(imageId: string): string {
  return imageId.replace(/^wadors:/, "");
}

export class FrameQueue {
  private pending: number[] = [];
  private inFlight = 0;
  private done = new Set<number>();
  private stopped = false;
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
    this.centre = index;
    const n = this.imageIds.length;
    const order: number[] = [];
    for (let d = 0; order.length < n && d < n; d += 1) {
      for (const i of d === 0 ? [index] : [index + d, index - d]) {
        if (i >= 0 && i < n && !this.done.has(i)) order.push(i);
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

  private pump(): void {
    while (!this.stopped && this.inFlight < this.maxInFlight && this.pending.length) {
      const i = this.pending.shift() as number;
      if (this.done.has(i)) continue;
      this.inFlight += 1;
      void this.fetch(i, 0).finally(() => {
        this.inFlight -= 1;
        this.pump();
      });
    }
  }

  private async fetch(i: number, attempt: number): Promise<void> {
    const imageId = this.imageIds[i];
    try {
      await imageLoader.loadAndCacheImage(imageId, { priority: 0, requestType: "interaction" } as any);
      this.done.add(i);
      if (this.done.size === this.imageIds.length) this.onComplete();
    } catch (err) {
      if (this.stopped) return;
      let status = statusOf(err);
      if (!status) {
        // The loader does not always say why: ask the frame URL itself (no body kept).
        try {
          status = (await fetch(frameUrl(imageId), { method: "GET", cache: "no-store" }))
            .status;
        } catch {
          status = 0;
        }
      }
      if (status === 401 || status === 403) {
        this.stop();
        this.onRefused({ status, imageId });
        return;
      }
      if (attempt + 1 < RETRIES && status !== 404 && status !== 406) {
        await new Promise((r) => setTimeout(r, 300 * 2 ** attempt));
        return this.fetch(i, attempt + 1);
      }
      this.done.add(i); // given up: the viewport shows its own error for that slice
    }
  }
}
