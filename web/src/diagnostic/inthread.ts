// Uncompressed frames decoded on the page's own thread, by Cornerstone's own decode function
// (the one its web workers run), instead of being posted to a worker and back. For an
// uncompressed frame "decoding" is a few passes over the samples (range, copy, rescale), and
// the two structured clones of a 0.5 MB frame plus the worker round trip cost more CPU than
// that: on a 2-core machine that CPU is what the whole series waits for. Everything else of
// Cornerstone's image creation (createImage: metadata, typed array choice, VOI) is unchanged,
// so the image, its pixels and its rescale are the same; compressed frames still go to the
// workers and their WASM codecs.
import { getWebWorkerManager } from "@cornerstonejs/core";
import { decodeImageFrame } from "@cornerstonejs/dicom-image-loader";
import { UNCOMPRESSED } from "./frames";

type DecodeArgs = { imageFrame: unknown; transferSyntax: string; pixelData: Uint8Array;
                    options: unknown; decodeConfig: unknown };

/** Route the image loader's decode tasks of uncompressed frames to this thread. */
export function decodeUncompressedInThread(): void {
  const manager = getWebWorkerManager() as any;
  const executeTask = manager.executeTask.bind(manager);
  manager.executeTask = (worker: string, task: string, args: DecodeArgs, options: unknown) => {
    if (worker === "dicomImageLoader" && task === "decodeTask" &&
        UNCOMPRESSED.has(args?.transferSyntax)) {
      const { imageFrame, transferSyntax, pixelData, options: opts, decodeConfig } = args;
      return (decodeImageFrame as any)(imageFrame, transferSyntax, pixelData, decodeConfig, opts);
    }
    return executeTask(worker, task, args, options);
  };
}
