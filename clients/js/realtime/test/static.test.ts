import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { expect, it } from "vitest";

it("the served static/renum/realtime.js and .d.ts are this package's current build", () => {
  // `npm test` builds dist/ (never static/); --check compares that build with the committed files.
  const script = join(process.cwd(), "scripts", "build-static.mjs"); // vitest runs in the package
  const output = execFileSync(process.execPath, [script, "--check"], { encoding: "utf8" });
  expect(output).toContain("match the build");
});
