// The AI segmentation overlay for viewports drawn by Cornerstone's CPU renderer (backend.ts
// picks it on software-rasterised WebGL). That renderer composites no labelmap actors, so the
// SEG's runs are painted on a 2D canvas laid over the viewport, through the viewport's own
// image -> canvas mapping (zoom, pan, rotation and flips follow), again on every
// IMAGE_RENDERED. The GPU path keeps Cornerstone's labelmap (ai_overlay.ts).
import { Enums, getEnabledElementByViewportId, utilities, type Types } from "@cornerstonejs/core";

export type Runs = [number, number, number][]; // (row, first column, end column)

export class CanvasOverlay {
  /** Slice index in the source series -> the mask's runs on that slice. */
  runs = new Map<number, Runs>();
  visible = true;
  opacity = 0.5;
  private readonly hooked = new Set<string>();
  private readonly shown = new Set<string>();

  attach(viewportId: string): void {
    const viewport = this.viewport(viewportId);
    if (!viewport) return;
    this.shown.add(viewportId);
    if (!this.hooked.has(viewportId)) {
      this.hooked.add(viewportId);
      viewport.element.addEventListener(Enums.Events.IMAGE_RENDERED,
                                        () => this.paint(viewportId));
    }
    this.paint(viewportId);
  }

  detach(viewportId: string): void {
    this.shown.delete(viewportId);
    this.paint(viewportId);
  }

  isAttached(viewportId: string): boolean {
    return this.shown.has(viewportId);
  }

  paintAll(): void {
    for (const id of this.hooked) this.paint(id);
  }

  private viewport(viewportId: string): Types.IStackViewport | null {
    const enabled = getEnabledElementByViewportId(viewportId);
    return (enabled?.viewport as Types.IStackViewport | undefined) ?? null;
  }

  private canvasOf(element: HTMLDivElement): HTMLCanvasElement {
    let canvas = element.querySelector<HTMLCanvasElement>(":scope > canvas.ai-canvas");
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.className = "ai-canvas";
      if (getComputedStyle(element).position === "static") element.style.position = "relative";
      element.append(canvas);
    }
    return canvas;
  }

  private paint(viewportId: string): void {
    const viewport = this.viewport(viewportId);
    if (!viewport) return;
    const canvas = this.canvasOf(viewport.element);
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(viewport.element.clientWidth * ratio);
    const height = Math.round(viewport.element.clientHeight * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (!this.visible || !this.shown.has(viewportId)) return;
    const runs = this.runs.get(viewport.getCurrentImageIdIndex());
    const imageId = viewport.getCurrentImageId();
    if (!runs || !imageId) return;
    // Three image points fix the affine image -> canvas map (pixel centres at integers).
    const at = (x: number, y: number): Types.Point2 =>
      viewport.worldToCanvas(utilities.imageToWorldCoords(imageId, [x, y]));
    const [o, ax, ay] = [at(0, 0), at(1, 0), at(0, 1)];
    ctx.setTransform(ratio * (ax[0] - o[0]), ratio * (ax[1] - o[1]),
                     ratio * (ay[0] - o[0]), ratio * (ay[1] - o[1]),
                     ratio * o[0], ratio * o[1]);
    ctx.fillStyle = `rgba(255, 0, 255, ${this.opacity})`;
    for (const [row, first, end] of runs) ctx.fillRect(first - 0.5, row - 0.5, end - first, 1);
  }
}
