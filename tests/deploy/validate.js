// Validates Kubernetes manifests offline against the OpenAPI-derived JSON schemas that kubernetes-models
// (and its cert-manager and prometheus-operator packages) ship, compiled to validators. Strict like
// `kubeconform -strict`: a field the schema does not know is an error too (a misspelt
// `readOnlyRootFileSystem` would otherwise be dropped silently by the API server).
//
//   node validate.js FILE...    every YAML document in every FILE; exit 0 when all are valid, 1 if not.
//
// YAML is read as 1.1, as the API server and kubectl read it (0440 is octal, yes/no are booleans), and
// duplicate keys are errors.
"use strict";

const fs = require("fs");
const YAML = require("yaml");

// apiVersion -> the module exporting one model class per kind. A kind with no schema here is an error,
// never a silent pass.
const packages = ["kubernetes-models", "@kubernetes-models/cert-manager", "@kubernetes-models/prometheus-operator"];

function modelFor(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const sub = slash < 0 ? apiVersion : `${apiVersion.slice(0, slash)}/${apiVersion.slice(slash + 1)}`;
  for (const pkg of packages) {
    let mod;
    try {
      mod = require(`${pkg}/${sub}`);
    } catch (e) {
      if (e.code === "MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") continue;
      throw e;
    }
    if (typeof mod[kind] === "function") return mod[kind];
  }
  return null;
}

// Wraps an object so that the compiled validator's reads are recorded. The validators read exactly the
// properties their schema declares and enumerate the keys of map-typed objects (labels, annotations,
// resource quantities); a key of a plain object that was neither read nor enumerated is unknown.
function tracked(value, path, records) {
  if (value === null || typeof value !== "object") return value;
  const record = { path, value, read: new Set(), enumerated: false };
  records.push(record);
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return v;
      record.read.add(key);
      if (v === null || typeof v !== "object" || !Object.prototype.hasOwnProperty.call(target, key)) return v;
      if (!children.has(key)) children.set(key, tracked(v, `${path}/${key}`, records));
      return children.get(key);
    },
    has(target, key) {
      if (typeof key === "string") record.read.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      record.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function validateObject(obj) {
  const problems = [];
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return ["not a mapping"];
  if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") return ["no apiVersion or kind"];
  const Model = modelFor(obj.apiVersion, obj.kind);
  if (!Model) return [`no schema for ${obj.apiVersion} ${obj.kind}`];
  const records = [];
  const proxy = tracked(obj, "", records);
  try {
    Model.prototype.validate.call(proxy);
  } catch (e) {
    problems.push(e.message);
  }
  for (const r of records) {
    if (Array.isArray(r.value) || r.enumerated) continue;
    for (const key of Object.keys(r.value)) {
      if (!r.read.has(key)) problems.push(`data${r.path}/${key} is not a field of the schema`);
    }
  }
  return problems;
}

function describe(obj) {
  if (!obj || typeof obj !== "object") return "?";
  const m = obj.metadata || {};
  return `${obj.kind || "?"} ${m.namespace ? `${m.namespace}/` : ""}${m.name || "?"}`;
}

function main(files) {
  if (files.length === 0) {
    console.error("usage: node validate.js FILE...");
    return 2;
  }
  let objects = 0;
  let failures = 0;
  for (const file of files) {
    const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { version: "1.1", uniqueKeys: true });
    docs.forEach((doc, i) => {
      const where = `${file}: document ${i + 1}`;
      if (doc.errors.length > 0) {
        failures++;
        for (const e of doc.errors) console.log(`FAIL ${where}: ${e.message}`);
        return;
      }
      const obj = doc.toJS();
      if (obj === null || obj === undefined) return; // an empty document between two `---`
      objects++;
      const problems = validateObject(obj);
      if (problems.length > 0) {
        failures++;
        for (const p of problems) console.log(`FAIL ${where} (${describe(obj)}): ${p}`);
      } else {
        console.log(`ok   ${where} (${obj.apiVersion} ${describe(obj)})`);
      }
    });
  }
  console.log(`${objects} objects in ${files.length} files, ${failures} invalid`);
  return failures === 0 && objects > 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
