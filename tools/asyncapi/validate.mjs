// Validates an AsyncAPI document with @asyncapi/parser (the library `asyncapi validate` runs, with its
// default rules): any diagnostic of severity error or warning fails, as `--fail-severity=warn` does.
// Usage: node tools/asyncapi/validate.mjs docs/asyncapi.yaml
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate.mjs <asyncapi document>");
  process.exit(2);
}
const source = resolve(file);
const parser = new Parser();
const diagnostics = await parser.validate(await readFile(source, "utf8"), { source });
const names = { 0: "error", 1: "warning", 2: "information", 3: "hint" };
let failed = 0;
for (const d of diagnostics) {
  const where = d.path && d.path.length ? d.path.join(".") : "(document)";
  const line = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : "";
  console.log(`${file}:${line} ${names[d.severity]} ${d.code}: ${d.message} at ${where}`);
  if (d.severity <= DiagnosticSeverity.Warning) failed += 1;
}
if (failed) {
  console.error(`${file}: ${failed} error(s) or warning(s): not valid`);
  process.exit(1);
}
console.log(`${file} is a valid AsyncAPI document (${diagnostics.length} hint(s) or information(s))`);
