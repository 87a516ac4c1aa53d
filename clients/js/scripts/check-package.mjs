// Checks the package as npm users get it: `npm pack` holds exactly what it
// should, and apps compile against the packed types under `tsc --strict`
// with both WebSocket classes the client accepts (the browser's, lib DOM;
// the `ws` package's, @types/ws without DOM), then import it at run time.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
const expected = ["LICENSE", "README.md", "dist/wsgate.d.ts", "dist/wsgate.js", "package.json"];

// Inside clients/js, so that the consumers find ws, @types/* and typescript
// in its node_modules, and the packed package in their own.
const dir = mkdtempSync(join(root, ".package-check-"));
const fail = (msg) => {
  console.error(`clients/js package check: ${msg}`);
  process.exitCode = 1;
};
try {
  // --ignore-scripts: pack the committed dist (check-dist guards it), not a fresh build.
  const out = execFileSync(npm, ["pack", "--json", "--ignore-scripts", "--pack-destination", dir], {
    cwd: root,
    encoding: "utf8",
  });
  const [info] = JSON.parse(out);
  const files = info.files.map((f) => f.path).sort();
  if (JSON.stringify(files) !== JSON.stringify(expected)) {
    fail(`npm pack holds [${files}], want [${expected}]`);
  }
  const pkg = join(dir, "node_modules", "@wsgate", "client");
  mkdirSync(pkg, { recursive: true });
  execFileSync("tar", ["-xzf", join(dir, info.filename), "-C", pkg, "--strip-components=1"]);
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  cpSync(join(root, "test", "consumers"), dir, { recursive: true });

  const base = { strict: true, noEmit: true, skipLibCheck: false, target: "ES2022", esModuleInterop: false };
  const configs = {
    "browser (lib DOM, bundler)": {
      compilerOptions: { ...base, lib: ["ES2022", "DOM"], module: "ESNext", moduleResolution: "bundler", types: [] },
      files: ["browser.ts"],
    },
    "Node + ws (no DOM, nodenext)": {
      compilerOptions: { ...base, lib: ["ES2022"], module: "NodeNext", moduleResolution: "NodeNext", types: ["node"] },
      files: ["node-ws.ts"],
    },
  };
  for (const [name, config] of Object.entries(configs)) {
    const file = join(dir, `tsconfig.${config.files[0]}.json`);
    writeFileSync(file, JSON.stringify(config));
    try {
      execFileSync(process.execPath, [tsc, "-p", file], { cwd: dir, encoding: "utf8" });
      console.log(`  tsc --strict: ${name}: ok`);
    } catch (e) {
      fail(`tsc --strict: ${name}:\n${e.stdout}${e.stderr ?? ""}`);
    }
  }

  // Run time: the exports map resolves, and a client takes ws's class.
  const probe = [
    'import WebSocket from "ws";',
    'import { WsgateClient, CloseCodes } from "@wsgate/client";',
    'const c = new WsgateClient({ url: "ws://127.0.0.1:9/ws", transport: "cookie", WebSocket });',
    'if (c.state !== "idle" || CloseCodes.REVOKED !== 4403) throw new Error("unexpected client");',
    'const pkg = (await import("@wsgate/client/package.json", { with: { type: "json" } })).default;',
    'console.log(`  import "@wsgate/client" (${pkg.version}, ${pkg.license}): ok`);',
  ].join("\n");
  writeFileSync(join(dir, "probe.mjs"), probe);
  execFileSync(process.execPath, [join(dir, "probe.mjs")], { cwd: dir, stdio: "inherit" });
  if (!process.exitCode) console.log(`clients/js package ok: ${info.filename}, ${files.length} files, ${info.size} bytes`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
