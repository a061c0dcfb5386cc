// One build for every page's assets: hashed names into the Python package, and a manifest
// (.vite/manifest.json) the server reads to write <script>/<link> tags.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/static/dist/",
  publicDir: false,
  build: {
    outDir: "../src/cloudfilm/interfaces/web/static/dist",
    emptyOutDir: true,
    manifest: true,
    target: "es2020",
    // Each page loads only its module; nothing inlined as data: URLs (CSP stays 'self').
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024, // axe-core (tests only) is ~560 KB
    rollupOptions: {
      input: {
        portal: "src/portal.js",
        viewer: "src/viewer.js",
        axe: "src/axe.js",
        workstation: "src/workstation.js",
        // The workstation's diagnostic viewer (Cornerstone3D); its codec workers and
        // .wasm files are emitted as hashed assets beside it.
        diagnostic: "src/diagnostic/main.ts",
        // Asks for the first series and slice while the bundle above loads.
        "diagnostic-boot": "src/diagnostic/boot.ts",
        dashboard: "src/dashboard.js",
        admin: "src/admin.js",
      },
    },
  },
  // Cornerstone's decode workers are ES modules (they import the codecs).
  worker: { format: "es" },
});
