import { defineConfig } from "vite";

// The package is one dependency-free ES module (dist/index.js); the same file is what the
// server publishes at /static/renum/realtime.js (scripts/build-static.mjs).
export default defineConfig({
  build: {
    lib: { entry: "src/index.ts", formats: ["es"], fileName: () => "index.js" },
    target: "es2022",
    minify: false,
    sourcemap: false,
    emptyOutDir: false,
    outDir: "dist",
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.ts"],
  },
});
