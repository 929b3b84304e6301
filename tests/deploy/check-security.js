// Checks the rendered nodemeter manifests for the settings issue 6 and DESIGN.md's security model ask
// for, beyond what a schema can say.
//
//   node check-security.js base BASE.yaml          the quick-start base (kubectl kustomize deploy/kubernetes)
//   node check-security.js cert-manager CM.yaml     the cert-manager variant (deploy/overlays/cert-manager)
//   node check-security.js prometheus-only PO.yaml  the agents alone (deploy/overlays/prometheus-only)
//
// Prints one line per failed check and exits 1 if any failed.
"use strict";

const fs = require("fs");
const YAML = require("yaml");

const failures = [];
let checks = 0;
function check(ok, what) {
  checks++;
  if (!ok) failures.push(what);
  return ok;
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const sorted = (xs) => [...(xs || [])].sort();

function load(file) {
  return YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { version: "1.1" })
    .map((d) => d.toJS())
    .filter((o) => o);
}

function find(objs, kind, name) {
  return objs.filter((o) => o.kind === kind && o.metadata.name === name);
}
function one(objs, kind, name) {
  const found = find(objs, kind, name);
  check(found.length === 1, `exactly one ${kind} ${name} (found ${found.length})`);
  return found[0];
}

const clusterScoped = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "APIService"]);

function checkNamespaces(objs) {
  for (const o of objs) {
    const id = `${o.kind} ${o.metadata.name}`;
    if (clusterScoped.has(o.kind)) {
      check(o.metadata.namespace === undefined, `${id} is cluster-scoped and has no namespace`);
    } else if (o.kind === "RoleBinding" && o.roleRef.name === "extension-apiserver-authentication-reader") {
      check(o.metadata.namespace === "kube-system", `${id} stays in kube-system (is ${o.metadata.namespace})`);
    } else {
      check(o.metadata.namespace === "nodemeter", `${id} is in namespace nodemeter (is ${o.metadata.namespace})`);
    }
  }
}

function rulesOf(role) {
  return sorted(
    (role.rules || []).map((r) =>
      JSON.stringify([sorted(r.apiGroups), sorted(r.resources), sorted(r.verbs), r.resourceNames || [], r.nonResourceURLs || []])
    )
  );
}
function rule(apiGroups, resources, verbs) {
  return JSON.stringify([sorted(apiGroups), sorted(resources), sorted(verbs), [], []]);
}

function bindings(objs, kind, roleKind, roleName, saNamespace, saName) {
  return objs.filter(
    (o) =>
      o.kind === kind &&
      o.roleRef.kind === roleKind &&
      o.roleRef.name === roleName &&
      (o.subjects || []).some((s) => s.kind === "ServiceAccount" && s.namespace === saNamespace && s.name === saName)
  );
}

function checkAgentRbac(objs) {
  one(objs, "ServiceAccount", "nodemeter-agent");

  const agent = one(objs, "ClusterRole", "nodemeter-agent");
  if (agent) {
    check(
      same(rulesOf(agent), sorted([
        rule([""], ["pods"], ["list", "watch"]),
        rule(["authentication.k8s.io"], ["tokenreviews"], ["create"]),
        rule(["authorization.k8s.io"], ["subjectaccessreviews"], ["create"]),
      ])),
      `ClusterRole nodemeter-agent grants exactly pods list/watch, tokenreviews and subjectaccessreviews create (has ${rulesOf(agent)})`
    );
  }
  check(bindings(objs, "ClusterRoleBinding", "ClusterRole", "nodemeter-agent", "nodemeter", "nodemeter-agent").length === 1,
    "ClusterRole nodemeter-agent is bound to nodemeter/nodemeter-agent");
  checkLeastPrivilege(objs);
}

function checkRbac(objs) {
  checkAgentRbac(objs);
  one(objs, "ServiceAccount", "nodemeter-aggregator");
  const aggregator = one(objs, "ClusterRole", "nodemeter-aggregator");
  if (aggregator) {
    check(
      same(rulesOf(aggregator), sorted([rule([""], ["pods"], ["list", "watch"]), rule([""], ["nodes/metrics"], ["get"])])),
      `ClusterRole nodemeter-aggregator grants exactly pods list/watch and nodes/metrics get (has ${rulesOf(aggregator)})`
    );
  }
  check(bindings(objs, "ClusterRoleBinding", "ClusterRole", "nodemeter-aggregator", "nodemeter", "nodemeter-aggregator").length === 1,
    "ClusterRole nodemeter-aggregator is bound to nodemeter/nodemeter-aggregator");
  check(bindings(objs, "ClusterRoleBinding", "ClusterRole", "system:auth-delegator", "nodemeter", "nodemeter-aggregator").length === 1,
    "the aggregator is bound to system:auth-delegator");
  const reader = bindings(objs, "RoleBinding", "Role", "extension-apiserver-authentication-reader", "nodemeter", "nodemeter-aggregator");
  check(reader.length === 1 && reader[0].metadata.namespace === "kube-system",
    "the aggregator is bound to extension-apiserver-authentication-reader by a RoleBinding in kube-system");

  const metricsReaders = objs.filter(
    (o) => o.kind === "ClusterRole" && (o.rules || []).some((r) => (r.apiGroups || []).includes("metrics.k8s.io"))
  );
  check(metricsReaders.length === 1, "one ClusterRole reads metrics.k8s.io");
  for (const r of metricsReaders) {
    const labels = r.metadata.labels || {};
    for (const to of ["view", "edit", "admin"]) {
      check(labels[`rbac.authorization.k8s.io/aggregate-to-${to}`] === "true", `${r.metadata.name} is aggregated to ${to}`);
    }
    check(same(rulesOf(r), [rule(["metrics.k8s.io"], ["nodes", "pods"], ["get", "list", "watch"])]),
      `${r.metadata.name} grants get/list/watch on metrics.k8s.io pods and nodes only`);
  }
}

// Least privilege: nothing may read secrets, and nothing has wildcards.
function checkLeastPrivilege(objs) {
  for (const role of objs.filter((o) => o.kind === "ClusterRole" || o.kind === "Role")) {
    for (const r of role.rules || []) {
      check(!(r.resources || []).some((x) => x === "*" || x === "secrets"), `${role.metadata.name} names no secrets and no wildcard resource`);
      check(!(r.verbs || []).includes("*"), `${role.metadata.name} has no wildcard verb`);
    }
  }
}

// The security settings every nodemeter pod must have.
function checkPodSecurity(id, podSpec) {
  const pod = podSpec.securityContext || {};
  check(!podSpec.hostNetwork && !podSpec.hostPID && !podSpec.hostIPC, `${id} shares no host namespace`);
  const hostPathVolumes = new Set((podSpec.volumes || []).filter((v) => v.hostPath).map((v) => v.name));
  for (const c of [...(podSpec.initContainers || []), ...podSpec.containers]) {
    const cid = `${id} container ${c.name}`;
    const sc = c.securityContext || {};
    const runAsNonRoot = sc.runAsNonRoot ?? pod.runAsNonRoot;
    const runAsUser = sc.runAsUser ?? pod.runAsUser;
    check(runAsNonRoot === true, `${cid}: runAsNonRoot`);
    check(runAsUser === undefined || runAsUser > 0, `${cid}: runAsUser is not root`);
    check(sc.readOnlyRootFilesystem === true, `${cid}: readOnlyRootFilesystem`);
    check(sc.allowPrivilegeEscalation === false, `${cid}: allowPrivilegeEscalation false`);
    check(sc.privileged !== true, `${cid}: not privileged`);
    check(same((sc.capabilities || {}).drop, ["ALL"]), `${cid}: capabilities drop ALL`);
    check(!(sc.capabilities || {}).add, `${cid}: adds no capability`);
    const seccomp = (sc.seccompProfile || pod.seccompProfile || {}).type;
    check(seccomp === "RuntimeDefault", `${cid}: seccompProfile RuntimeDefault (is ${seccomp})`);
    for (const m of c.volumeMounts || []) {
      if (hostPathVolumes.has(m.name)) check(m.readOnly === true, `${cid}: hostPath volume ${m.name} is mounted read-only`);
    }
    const res = c.resources || {};
    check(res.requests && res.requests.cpu && res.requests.memory, `${cid}: requests cpu and memory`);
    check(res.limits && res.limits.memory, `${cid}: limits memory`);
    for (const [probe, path] of [["livenessProbe", "/livez"], ["readinessProbe", "/readyz"]]) {
      const get = (c[probe] || {}).httpGet || {};
      check(get.path === path && get.scheme === "HTTPS", `${cid}: ${probe} is HTTPS GET ${path}`);
    }
  }
}

function podLabels(workload) {
  return workload.spec.template.metadata.labels || {};
}
function selects(selector, labels) {
  return Object.entries((selector || {}).matchLabels || {}).every(([k, v]) => labels[k] === v) &&
    Object.keys((selector || {}).matchLabels || {}).length > 0;
}

function checkAgent(objs) {
  const ds = one(objs, "DaemonSet", "nodemeter-agent");
  if (!ds) return;
  const spec = ds.spec.template.spec;
  checkPodSecurity("DaemonSet nodemeter-agent", spec);
  check(spec.serviceAccountName === "nodemeter-agent", "the agent runs as its own service account");
  check(spec.priorityClassName === "system-node-critical", "the agent's priorityClassName is system-node-critical");
  const strategy = ds.spec.updateStrategy || {};
  check(strategy.type === "RollingUpdate" && (strategy.rollingUpdate || {}).maxUnavailable === "10%",
    `the agent rolls out at most 10% of nodes at once (is ${JSON.stringify(strategy)})`);
  check((spec.tolerations || []).some((t) => t.operator === "Exists" && !t.key && !t.effect),
    "the agent tolerates every taint, so it runs on every node");
  const c = spec.containers[0];
  const env = (c.env || []).find((e) => e.name === "NODE_NAME");
  check(env && same(env.valueFrom, { fieldRef: { fieldPath: "spec.nodeName" } }), "NODE_NAME comes from the downward API spec.nodeName");
  const args = c.args || [];
  check(args[0] === "agent", "the container runs `nodemeter agent`");
  check(args.includes("--tls-self-signed") || args.some((a) => a.startsWith("--tls-cert-file=")), "the agent serves TLS");
  check(args.includes("--authorization=webhook"), "the agent authorizes with SubjectAccessReview (--authorization=webhook)");
  check(args.includes("--listen=[::]:10261") || args.includes("--listen=0.0.0.0:10261"), "the agent listens on all addresses, port 10261");
  check(args.includes("--node-name=$(NODE_NAME)"), "the agent is told its node's name");
  const port = (c.ports || []).find((p) => p.name === "https-metrics");
  check(port && port.containerPort === 10261, "the agent's port https-metrics is 10261");

  const volumes = Object.fromEntries((spec.volumes || []).filter((v) => v.hostPath).map((v) => [v.hostPath.path, v.name]));
  const mounts = Object.fromEntries((c.volumeMounts || []).map((m) => [m.name, m]));
  for (const hostPath of ["/sys/fs/cgroup", "/run/containerd/io.containerd.runtime.v2.task/k8s.io",
    "/run/containers/storage/overlay-containers"]) {
    const name = volumes[hostPath];
    check(name && mounts[name] && mounts[name].readOnly === true, `host ${hostPath} is mounted read-only`);
  }
  const cgroupMount = mounts[volumes["/sys/fs/cgroup"]];
  check(cgroupMount && args.includes(`--cgroup-root=${cgroupMount.mountPath}`), "--cgroup-root is where the host's cgroups are mounted");
  for (const [flag, hostPath] of [["--containerd-state-dir", "/run/containerd/io.containerd.runtime.v2.task/k8s.io"],
    ["--crio-state-dir", "/run/containers/storage/overlay-containers"]]) {
    const m = mounts[volumes[hostPath]];
    check(m && args.includes(`${flag}=${m.mountPath}`), `${flag} is where host ${hostPath} is mounted`);
  }

  const svc = one(objs, "Service", "nodemeter-agent");
  if (svc) {
    check(svc.spec.clusterIP === "None", "the agents' Service is headless");
    check(selects(svc.spec.selector && { matchLabels: svc.spec.selector }, podLabels(ds)), "the agents' Service selects the agent pods");
    check((svc.spec.ports || []).some((p) => p.port === 10261 && p.targetPort === "https-metrics"), "the agents' Service exposes 10261");
  }
}

function checkAggregator(objs) {
  const dep = one(objs, "Deployment", "nodemeter-aggregator");
  if (!dep) return null;
  const spec = dep.spec.template.spec;
  checkPodSecurity("Deployment nodemeter-aggregator", spec);
  check(spec.serviceAccountName === "nodemeter-aggregator", "the aggregator runs as its own service account");
  check(dep.spec.replicas === 2, "the aggregator has two replicas");
  check(spec.priorityClassName === "system-cluster-critical", "the aggregator's priorityClassName is system-cluster-critical");
  const labels = podLabels(dep);
  const spread = (spec.topologySpreadConstraints || []).some(
    (t) => t.topologyKey === "kubernetes.io/hostname" && t.maxSkew === 1 && selects(t.labelSelector, labels));
  const anti = (((spec.affinity || {}).podAntiAffinity || {}).preferredDuringSchedulingIgnoredDuringExecution || [])
    .some((t) => t.podAffinityTerm.topologyKey === "kubernetes.io/hostname" && selects(t.podAffinityTerm.labelSelector, labels));
  check(spread && anti, "the aggregator's replicas are spread across nodes");
  const c = spec.containers[0];
  const args = c.args || [];
  check(args[0] === "aggregator", "the container runs `nodemeter aggregator`");
  check(args.includes("--listen=[::]:10443") || args.includes("--listen=0.0.0.0:10443"), "the aggregator listens on 10443");
  check(args.includes("--agent-port=10261"), "the aggregator calls the agents on 10261");
  const selector = args.find((a) => a.startsWith("--agent-selector="));
  const agent = find(objs, "DaemonSet", "nodemeter-agent")[0];
  if (check(selector && agent, "the aggregator finds agents by a selector")) {
    const [k, v] = selector.slice("--agent-selector=".length).split("=");
    check(podLabels(agent)[k] === v, `--agent-selector ${k}=${v} matches the agent pods`);
  }
  const port = (c.ports || []).find((p) => p.name === "https");
  check(port && port.containerPort === 10443, "the aggregator's port https is 10443");

  const pdbs = objs.filter((o) => o.kind === "PodDisruptionBudget" && selects(o.spec.selector, labels));
  check(pdbs.length === 1 && pdbs[0].spec.minAvailable === 1, "a PodDisruptionBudget keeps at least one aggregator");

  const svc = one(objs, "Service", "nodemeter-aggregator");
  if (svc) {
    check(selects({ matchLabels: svc.spec.selector }, labels), "the aggregator's Service selects the aggregator pods");
    check((svc.spec.ports || []).some((p) => p.port === 443 && p.targetPort === "https"), "the aggregator's Service listens on 443");
  }
  return dep;
}

function apiServices(objs) {
  const found = ["v1beta1", "v1"].map((version) => one(objs, "APIService", `${version}.metrics.k8s.io`)).filter(Boolean);
  for (const a of found) {
    const id = `APIService ${a.metadata.name}`;
    check(a.spec.group === "metrics.k8s.io" && `${a.spec.version}.metrics.k8s.io` === a.metadata.name, `${id} names its group and version`);
    check(same(a.spec.service, { name: "nodemeter-aggregator", namespace: "nodemeter", port: 443 }), `${id} points at nodemeter/nodemeter-aggregator:443`);
    check(a.spec.groupPriorityMinimum === 100 && a.spec.versionPriority === 100, `${id} has groupPriorityMinimum and versionPriority 100`);
  }
  return found;
}

function checkImages(objs) {
  const images = new Set();
  for (const o of objs.filter((x) => x.kind === "DaemonSet" || x.kind === "Deployment")) {
    for (const c of o.spec.template.spec.containers) images.add(c.image);
  }
  check(images.size === 1, `one image reference for every container (found ${[...images]})`);
}

function checkBase(objs) {
  checkNamespaces(objs);
  checkRbac(objs);
  checkAgent(objs);
  checkAggregator(objs);
  checkImages(objs);
  for (const a of apiServices(objs)) {
    check(a.spec.insecureSkipTLSVerify === true && !a.spec.caBundle, `APIService ${a.metadata.name}: the quick start skips TLS verification`);
    check(!(a.metadata.annotations || {})["cert-manager.io/inject-ca-from"], `APIService ${a.metadata.name}: no CA injection in the base`);
  }
}

function checkCertManager(objs) {
  checkNamespaces(objs);
  checkRbac(objs);
  checkAgent(objs);
  const dep = checkAggregator(objs);
  checkImages(objs);
  for (const a of apiServices(objs)) {
    const id = `APIService ${a.metadata.name}`;
    check(a.spec.insecureSkipTLSVerify === undefined, `${id}: no insecureSkipTLSVerify with cert-manager`);
    const from = (a.metadata.annotations || {})["cert-manager.io/inject-ca-from"] || "";
    const [ns, name] = from.split("/");
    const cert = objs.find((o) => o.kind === "Certificate" && o.metadata.namespace === ns && o.metadata.name === name);
    if (!check(cert, `${id}: cert-manager.io/inject-ca-from names a Certificate of this variant (is "${from}")`)) continue;
    check((cert.spec.dnsNames || []).includes("nodemeter-aggregator.nodemeter.svc"),
      `Certificate ${name} is valid for nodemeter-aggregator.nodemeter.svc, the name kube-apiserver dials`);
    const issuer = objs.find((o) => o.kind === cert.spec.issuerRef.kind && o.metadata.name === cert.spec.issuerRef.name && o.metadata.namespace === ns);
    check(issuer && issuer.spec.ca, `Certificate ${name} is issued by a CA Issuer of this variant`);
    if (issuer && issuer.spec.ca) {
      const ca = objs.find((o) => o.kind === "Certificate" && o.spec.secretName === issuer.spec.ca.secretName);
      check(ca && ca.spec.isCA === true, `the CA Issuer's Secret ${issuer.spec.ca.secretName} is an isCA Certificate`);
    }
    if (!dep) continue;
    const spec = dep.spec.template.spec;
    const volume = (spec.volumes || []).find((v) => v.secret && v.secret.secretName === cert.spec.secretName);
    if (!check(volume, `the aggregator mounts Secret ${cert.spec.secretName}`)) continue;
    const c = spec.containers[0];
    const mount = (c.volumeMounts || []).find((m) => m.name === volume.name);
    if (!check(mount && mount.readOnly === true, "the serving certificate is mounted read-only")) continue;
    const args = c.args || [];
    check(args.includes(`--tls-cert-file=${mount.mountPath}/tls.crt`) && args.includes(`--tls-private-key-file=${mount.mountPath}/tls.key`),
      "the aggregator serves the mounted certificate and key");
    const mode = volume.secret.defaultMode;
    check(mode === undefined || (mode & 0o007) === 0, "the key is not world-readable");
    check(mode === undefined || (mode & 0o040) === 0 || (spec.securityContext || {}).fsGroup === 65532,
      "the aggregator's group (fsGroup) can read the key");
  }
}

// The agents only, beside metrics-server: nothing that serves or registers metrics.k8s.io.
function checkPrometheusOnly(objs) {
  checkNamespaces(objs);
  checkAgentRbac(objs);
  checkAgent(objs);
  checkImages(objs);
  const left = objs.filter((o) => o.kind === "APIService" || /aggregator|metrics-reader/.test(o.metadata.name) ||
    (o.rules || []).some((r) => (r.apiGroups || []).includes("metrics.k8s.io")) || o.metadata.namespace === "kube-system");
  check(left.length === 0, `nothing serves or registers metrics.k8s.io (left: ${left.map((o) => `${o.kind} ${o.metadata.name}`)})`);
}

const [variant, file] = process.argv.slice(2);
const variants = { base: checkBase, "cert-manager": checkCertManager, "prometheus-only": checkPrometheusOnly };
if (!variants[variant] || !file) {
  console.error("usage: node check-security.js base|cert-manager|prometheus-only RENDERED.yaml");
  process.exit(2);
}
variants[variant](load(file));
for (const f of failures) console.log(`FAIL ${variant}: ${f}`);
console.log(`${variant}: ${checks - failures.length} of ${checks} checks passed`);
process.exitCode = failures.length === 0 ? 0 : 1;
