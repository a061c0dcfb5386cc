// Uncompressed frames decoded on the page's own thread instead of being posted to one of
// Cornerstone's web workers and back. For an uncompressed frame "decoding" is a few passes
// over the samples (sign, range, copy, rescale), and the two structured clones of a 0.5 MB
// frame plus the worker round trip cost more CPU than that: on a 2-core machine that CPU is
// what the whole series waits for. The common case (16-bit monochrome, plain rescale) is done
// here in two passes with the result of Cornerstone's worker function value for value
// (`postProcessDecodedPixels` of @cornerstonejs/dicom-image-loader 5.14, whose shift, range,
// copy and rescale passes this follows); other uncompressed frames run that function itself
// on this thread. Everything else of Cornerstone's image creation (createImage: metadata,
// typed array choice, VOI) is unchanged; compressed frames still go to the workers' codecs.
import { getWebWorkerManager } from "@cornerstonejs/core";
import { decodeImageFrame } from "@cornerstonejs/dicom-image-loader";
import { UNCOMPRESSED } from "./frames";

type Frame = { bitsAllocated: number; bitsStored?: number; pixelRepresentation?: number;
               samplesPerPixel: number; photometricInterpretation: string; [k: string]: any };
type Scaling = { rescaleSlope?: number; rescaleIntercept?: number; modality?: string };
type Options = { preScale: { enabled: boolean; scalingParameters?: Scaling };
                 allowFloatRendering?: boolean; targetBuffer?: unknown };
type DecodeArgs = { imageFrame: Frame; transferSyntax: string; pixelData: Uint8Array;
                    options: Options; decodeConfig: unknown };

/** The typed array Cornerstone stores values of this range in (getPixelDataTypeFromMinMax). */
function arrayFor(min: number, max: number): Int8ArrayConstructor | Uint8ArrayConstructor |
    Int16ArrayConstructor | Uint16ArrayConstructor | Uint32ArrayConstructor |
    Float32ArrayConstructor {
  if (Number.isInteger(min) && Number.isInteger(max)) {
    if (min >= 0) {
      if (max <= 255) return Uint8Array;
      if (max <= 65535) return Uint16Array;
      if (max <= 4294967295) return Uint32Array;
    } else {
      if (min >= -128 && max <= 127) return Int8Array;
      if (min >= -32768 && max <= 32767) return Int16Array;
    }
  }
  return Float32Array;
}

/** A 16-bit monochrome frame as Cornerstone's worker leaves it, or null for other frames. */
export function decode16(frame: Frame, pixelData: Uint8Array, options: Options): Frame | null {
  const pre = options.preScale;
  const scaling = pre?.scalingParameters;
  if (frame.bitsAllocated !== 16 || frame.samplesPerPixel !== 1 || options.targetBuffer ||
      /^(RGB|YBR|PALETTE)/.test(frame.photometricInterpretation ?? "") ||
      pixelData.length % 2 || (pre?.enabled && !scaling) ||
      scaling?.modality === "PT" || scaling?.modality === "RTDOSE") return null;
  const start = Date.now();
  const signed = frame.pixelRepresentation === 1;
  const aligned = pixelData.byteOffset % 2 ? pixelData.slice() : pixelData;
  const n = aligned.length / 2;
  const src = signed ? new Int16Array(aligned.buffer, aligned.byteOffset, n)
    : new Uint16Array(aligned.buffer, aligned.byteOffset, n);
  // Sign extension from Bits Stored (a no-op when all 16 bits are stored), then the range.
  const shift = signed && frame.bitsStored !== undefined ? 32 - frame.bitsStored : 16;
  if (shift !== 16) for (let i = 0; i < n; i += 1) src[i] = (src[i] << shift) >> shift;
  let min = src[0];
  let max = src[0];
  for (let i = 1; i < n; i += 1) {
    const v = src[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const floatRescale = Boolean(pre?.enabled) && Object.values(scaling ?? {})
    .some((v) => typeof v === "number" && !Number.isInteger(v));
  const scale = Boolean(pre?.enabled) &&
    !((options.allowFloatRendering ?? true) === false && floatRescale);
  const slope = scaling?.rescaleSlope;
  const intercept = scaling?.rescaleIntercept;
  const rescale = scale && typeof slope === "number" && typeof intercept === "number";
  const lo = rescale ? slope * min + intercept : min;
  const hi = rescale ? slope * max + intercept : max;
  const out = new (arrayFor(lo, hi))(n);
  if (rescale) {
    // The value as the new array holds it, then rescaled there: Cornerstone's copy and
    // rescale passes in one.
    for (let i = 0; i < n; i += 1) {
      out[i] = src[i];
      out[i] = out[i] * slope + intercept;
    }
    frame.preScale = { ...pre, scaled: true };
  } else {
    out.set(src);
  }
  frame.pixelData = out;
  frame.pixelDataLength = n;
  frame.smallestPixelValue = lo;
  frame.largestPixelValue = hi;
  frame.decodeTimeInMS = Date.now() - start;
  return frame;
}

/** Frames decoded here so far: by this module's own pass, by Cornerstone's function. */
export const decodedHere = { own: 0, cornerstone: 0 };

/** Route the image loader's decode tasks of uncompressed frames to this thread
 * (``own``: false runs Cornerstone's function for every one, for comparisons). */
export function decodeUncompressedInThread(own = true): void {
  const manager = getWebWorkerManager() as any;
  const executeTask = manager.executeTask.bind(manager);
  manager.executeTask = (worker: string, task: string, args: DecodeArgs, options: unknown) => {
    if (worker === "dicomImageLoader" && task === "decodeTask" &&
        UNCOMPRESSED.has(args?.transferSyntax)) {
      const { imageFrame, transferSyntax, pixelData, options: opts, decodeConfig } = args;
      const done = own ? decode16(imageFrame, pixelData, opts) : null;
      decodedHere[done ? "own" : "cornerstone"] += 1;
      if (done) return Promise.resolve(done);
      return (decodeImageFrame as any)(imageFrame, transferSyntax, pixelData, decodeConfig, opts);
    }
    return executeTask(worker, task, args, options);
  };
}
