// After `vite build`: a brotli and a gzip copy beside each large asset, which the server
// sends to browsers that accept them (pages.CachedStatic). The viewer's bundle is megabytes
// of script: on a 1.5 MB/s link, compression is seconds off its start. Node's own zlib.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const dir = new URL("../src/cloudfilm/interfaces/web/static/dist/assets/", import.meta.url);
for (const name of readdirSync(dir)) {
  if (!/\.(js|css|wasm|json|svg)$/.test(name)) continue;
  const path = join(dir.pathname, name);
  if (statSync(path).size < 1024) continue;
  const data = readFileSync(path);
  const packed = gzipSync(data, { level: constants.Z_BEST_COMPRESSION });
  if (packed.length >= data.length * 0.9) continue;
  writeFileSync(`${path}.gz`, packed);
  const brotli = brotliCompressSync(data, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: data.length },
  });
  if (brotli.length < packed.length) writeFileSync(`${path}.br`, brotli);
}
