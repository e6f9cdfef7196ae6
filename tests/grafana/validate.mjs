// Validate every dashboard in the given directory against the official Grafana
// dashboard schema: @grafana/schema's `Dashboard` TypeScript type, converted to JSON
// Schema with ts-json-schema-generator, checked with ajv. Exit 1 on any violation.
import { createGenerator } from "ts-json-schema-generator";
import Ajv from "ajv";
import { readFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const pkg = dirname(require.resolve("@grafana/schema/package.json"));
const types = join(pkg, "dist/types/raw/dashboard/x/types.gen.d.ts");
const schema = createGenerator({ path: types, type: "Dashboard", skipTypeCheck: true }).createSchema("Dashboard");
const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true });
const validate = ajv.compile(schema);

const dir = process.argv[2];
let failed = 0;
const files = readdirSync(dir).filter((f) => f.endsWith(".json"));
if (files.length === 0) {
  console.error(`no dashboards in ${dir}`);
  process.exit(1);
}
for (const f of files) {
  const dash = JSON.parse(readFileSync(join(dir, f), "utf8"));
  if (validate(dash)) {
    console.log(`ok ${f}`);
  } else {
    failed++;
    console.log(`INVALID ${f}`);
    for (const e of validate.errors) console.log(`  ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
  }
}
process.exit(failed ? 1 : 0);
