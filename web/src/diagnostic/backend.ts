// Which of Cornerstone's renderers draws the stack viewports. With a real GPU, WebGL; with a
// software rasterizer (SwiftShader, llvmpipe: a virtual desktop, a thin client, a hospital PC
// without a graphics driver) WebGL is emulated on the CPU and every frame pays for a full
// shader pass, while Cornerstone's CPU renderer draws a 2D slice through a lookup table in a
// few milliseconds. `?renderer=gpu|cpu` overrides the choice (for comparisons).
import { getRenderingCapabilities, setCanvasCreator } from "@cornerstonejs/core";

export function useCpuRendering(): boolean {
  const forced = new URLSearchParams(location.search).get("renderer");
  if (forced === "cpu" || forced === "gpu") return forced === "cpu";
  const caps = getRenderingCapabilities();
  return !caps.webgl || caps.softwareRasterizer;
}

/** For the CPU renderer: its canvases (the viewports' and the 512x512 one each slice is
 * written into) drawn by Skia in this process instead of "accelerated" canvases. On a
 * software GL those are rasterised by the emulated GPU in the GPU process (putImageData an
 * upload, the scaled drawImage a shader pass, then a wait for both before the frame is
 * shown): measured in headless Chromium with SwiftShader, about half that process's CPU
 * time a frame goes away, and frames come that much faster. Only the first getContext's
 * options count, so the context is made here, before Cornerstone asks for it. Call before
 * any viewport is enabled. */
export function useSoftwareCanvases(): void {
  setCanvasCreator((width: number, height: number) => {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d", { willReadFrequently: true });
    return canvas;
  });
}
