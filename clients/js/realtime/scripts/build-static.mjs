// Writes the files the server publishes, from this package's build (dist/):
//   static/renum/realtime.js   = dist/index.js (one ES module, no dependencies)
//   static/renum/realtime.d.ts = dist/*.d.ts in one module (the local imports dropped)
// `--check` writes nothing and fails when the committed files differ from this build, so a
// change to src/ that was not rebuilt into static/ cannot go unnoticed.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "dist");
const target = join(here, "..", "..", "..", "..", "static", "renum");
const HEADER = "// Built from clients/js/realtime (npm run build); do not edit: edit the TypeScript sources.\n";

function declarations() {
  // Dependency order: each file only uses names declared before it or in itself.
  const parts = ["types.d.ts", "executions.d.ts", "client.d.ts"].map((name) =>
    readFileSync(join(dist, name), "utf8")
      .split("\n")
      .filter((line) => !/^import .* from "\.\/.*";$/.test(line) && !/^export \{.*\} from "\.\/.*";$/.test(line))
      .join("\n"));
  return HEADER + parts.join("\n");
}

const files = {
  "realtime.js": HEADER + readFileSync(join(dist, "index.js"), "utf8"),
  "realtime.d.ts": declarations(),
};

if (process.argv.includes("--check")) {
  const stale = Object.entries(files).filter(([name, text]) => {
    try { return readFileSync(join(target, name), "utf8") !== text; } catch { return true; }
  }).map(([name]) => `static/renum/${name}`);
  if (stale.length) {
    console.error(`${stale.join(", ")} differ from a fresh build of clients/js/realtime: run npm run build and commit them`);
    process.exit(1);
  }
  console.log("static/renum/realtime.js and realtime.d.ts match the build");
} else {
  for (const [name, text] of Object.entries(files)) writeFileSync(join(target, name), text);
}
