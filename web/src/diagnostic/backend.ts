// Which of Cornerstone's renderers draws the stack viewports. With a real GPU, WebGL; with a
// software rasterizer (SwiftShader, llvmpipe: a virtual desktop, a thin client, a hospital PC
// without a graphics driver) WebGL is emulated on the CPU and every frame pays for a full
// shader pass, while Cornerstone's CPU renderer draws a 2D slice through a lookup table in a
// few milliseconds. `?renderer=gpu|cpu` overrides the choice (for comparisons).
import { getRenderingCapabilities } from "@cornerstonejs/core";

export function useCpuRendering(): boolean {
  const forced = new URLSearchParams(location.search).get("renderer");
  if (forced === "cpu" || forced === "gpu") return forced === "cpu";
  const caps = getRenderingCapabilities();
  return !caps.webgl || caps.softwareRasterizer;
}
