// The server embeds what this builds (host/build.rs passes --outDir); hashed file names under
// assets/ let it serve them as immutable.
import { defineConfig } from "vite";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    target: "es2022",
    assetsDir: "assets",
    sourcemap: false,
    reportCompressedSize: true,
    chunkSizeWarningLimit: 300,
  },
});
