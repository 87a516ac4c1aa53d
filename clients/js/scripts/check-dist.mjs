// Fails when dist/ is not what the sources compile to: the gateway binary
// embeds dist/wsgate.js (dev page), so a stale dist ships stale code.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = mkdtempSync(join(tmpdir(), "wsgate-dist-"));
try {
  const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
  execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.json"), "--outDir", out], { stdio: "inherit" });
  const want = readdirSync(out).sort();
  const have = readdirSync(join(root, "dist")).sort();
  const stale = [];
  if (JSON.stringify(want) !== JSON.stringify(have)) stale.push(`files: dist has [${have}], sources give [${want}]`);
  for (const f of want) {
    let a = null;
    try {
      a = readFileSync(join(root, "dist", f), "utf8");
    } catch {
      /* missing: reported above */
    }
    if (a !== null && a !== readFileSync(join(out, f), "utf8")) stale.push(`dist/${f} differs`);
  }
  if (stale.length) {
    console.error(`clients/js/dist is stale (run \`npm run build\` in clients/js and commit dist/):\n  ${stale.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`clients/js/dist is up to date (${want.join(", ")})`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
