// deploy/prometheus/scrape-config.yaml, checked where promtool cannot and made testable offline.
//
//   node scrape-config.js CONFIG OUT_CONFIG TARGETS_JSON TOKEN_FILE
//
// Debian's Prometheus is built without Kubernetes service discovery, so promtool rejects
// `kubernetes_sd_configs`. This checks those blocks against the fields Prometheus documents for
// kubernetes_sd_config (roles, namespaces, selectors) and that every __meta_kubernetes_* label the
// relabelling reads exists for the role; then it writes OUT_CONFIG, the same configuration with each
// job's Kubernetes discovery replaced by a file_sd_config reading TARGETS_JSON and its token path by
// TOKEN_FILE, for promtool and a real Prometheus to check the rest, relabelling included.
"use strict";

const fs = require("fs");
const YAML = require("yaml");

const sdFields = new Set(["api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata",
  "basic_auth", "authorization", "oauth2", "follow_redirects", "enable_http2", "tls_config", "proxy_url"]);
const roles = new Set(["node", "service", "pod", "endpoints", "endpointslice", "ingress"]);
// The __meta_kubernetes_* labels each role attaches (Prometheus documentation, kubernetes_sd_config).
const metaByRole = {
  pod: [/^__meta_kubernetes_namespace$/, /^__meta_kubernetes_pod_(name|ip|node_name|host_ip|uid|phase|ready|controller_kind|controller_name)$/,
    /^__meta_kubernetes_pod_(label|labelpresent|annotation|annotationpresent)_[a-zA-Z0-9_]+$/,
    /^__meta_kubernetes_pod_container_(name|id|image|init|port_name|port_number|port_protocol)$/],
};

const [input, output, targets, token] = process.argv.slice(2);
if (!token) {
  console.error("usage: node scrape-config.js CONFIG OUT_CONFIG TARGETS_JSON TOKEN_FILE");
  process.exit(2);
}
const problems = [];
const doc = YAML.parseDocument(fs.readFileSync(input, "utf8"), { uniqueKeys: true });
if (doc.errors.length) {
  for (const e of doc.errors) console.log(`FAIL ${input}: ${e.message}`);
  process.exit(1);
}
const config = doc.toJS();
const jobs = config.scrape_configs || [];
if (jobs.length === 0) problems.push("no scrape_configs");
const paths = [];
for (const job of jobs) {
  const id = `job ${job.job_name}`;
  const sds = job.kubernetes_sd_configs || [];
  if (sds.length === 0) problems.push(`${id}: no kubernetes_sd_configs`);
  for (const sd of sds) {
    for (const k of Object.keys(sd)) if (!sdFields.has(k)) problems.push(`${id}: kubernetes_sd_configs has no field ${k}`);
    if (!roles.has(sd.role)) problems.push(`${id}: kubernetes_sd_configs role ${sd.role} is not one of ${[...roles]}`);
    if (!metaByRole[sd.role]) problems.push(`${id}: this check knows the labels of role pod only, not ${sd.role}`);
    for (const k of Object.keys(sd.namespaces || {})) {
      if (k !== "names" && k !== "own_namespace") problems.push(`${id}: namespaces has no field ${k}`);
    }
    if (sd.namespaces && !(sd.namespaces.names || []).includes("nodemeter")) problems.push(`${id}: does not look in namespace nodemeter`);
    for (const s of sd.selectors || []) {
      for (const k of Object.keys(s)) if (!["role", "label", "field"].includes(k)) problems.push(`${id}: selectors has no field ${k}`);
      if (!roles.has(s.role)) problems.push(`${id}: selector role ${s.role} is unknown`);
    }
    const known = metaByRole[sd.role] || [];
    for (const r of job.relabel_configs || []) {
      for (const l of r.source_labels || []) {
        if (l.startsWith("__meta_kubernetes_") && !known.some((re) => re.test(l))) {
          problems.push(`${id}: relabelling reads ${l}, which role ${sd.role} does not attach`);
        }
      }
    }
  }
  if (job.scheme !== "https") problems.push(`${id}: the agents serve HTTPS only`);
  if (!job.authorization || !job.authorization.credentials_file) problems.push(`${id}: sends no bearer token`);
  paths.push(job.metrics_path);
  delete job.kubernetes_sd_configs;
  job.file_sd_configs = [{ files: [targets] }];
  if (job.authorization && job.authorization.credentials_file) job.authorization.credentials_file = token;
}
for (const p of ["/metrics/resource", "/metrics/cadvisor", "/metrics"]) {
  if (!paths.includes(p)) problems.push(`no job scrapes ${p}`);
}
for (const p of problems) console.log(`FAIL ${input}: ${p}`);
fs.writeFileSync(output, YAML.stringify(config));
console.log(`${input}: ${jobs.length} jobs, ${problems.length} problems`);
process.exitCode = problems.length === 0 ? 0 : 1;
