#!/usr/bin/env bash
# Every manifest under deploy/ validated offline, and the settings issue 6 asks for checked:
#  1. kustomize (kubectl's, v4 or later for components) renders the quick-start base deploy/kubernetes,
#     the cert-manager variant deploy/overlays/cert-manager and the agents-only variant
#     deploy/overlays/prometheus-only; every manifest file is used by them;
#  2. tests/deploy/validate.js validates the renders and every other manifest against the Kubernetes,
#     cert-manager and prometheus-operator schemas bundled in kubernetes-models (pinned in
#     tests/deploy/package-lock.json, installed with `npm ci` into a cache outside the tree), strictly:
#     unknown fields are errors;
#  3. tests/deploy/check-security.js checks the three renders: non-root, read-only root, no capabilities,
#     RuntimeDefault seccomp, read-only hostPath mounts, priority classes, the 10 % rollout, RBAC exactly,
#     the kube-system RoleBinding, insecureSkipTLSVerify only in the base and caBundle injection with
#     cert-manager;
#  4. controls: each checker must reject a copy broken on purpose, and kustomize's namespace transformer
#     must be seen moving the kube-system RoleBinding (why the base sets no `namespace:`);
#  5. deploy/prometheus/scrape-config.yaml: its Kubernetes discovery checked field by field, the rest by
#     `promtool check config`, and its relabelling run by a real Prometheus on 127.0.0.1 over targets that
#     carry the labels Kubernetes discovery would give an agent pod.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${NODEMETER_SOURCE_DIR:-$(cd "$here/../.." && pwd)}"
deploy="$src/deploy"
validator_src="$src/tests/deploy"

skip() { echo "skipped: $*"; exit 77; }
failures=0
passed=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; passed=$((passed + 1)); }

# --- tools -----------------------------------------------------------------------------------------
command -v node >/dev/null || skip "node is not installed (Debian package nodejs)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
  skip "node $(node --version) is older than 18, which the validator needs"
command -v npm >/dev/null || skip "npm is not installed (Debian package npm, or the one bundled with nodejs)"
command -v promtool >/dev/null || skip "promtool is not installed (Debian package prometheus)"
command -v prometheus >/dev/null || skip "prometheus is not installed (Debian package prometheus)"
command -v curl >/dev/null || skip "curl is not installed"

work="$(mktemp -d)"
prometheus_pid=""
cleanup() {
  if [ -n "$prometheus_pid" ]; then kill "$prometheus_pid" 2>/dev/null || true; wait "$prometheus_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A kubectl whose built-in kustomize knows components (kustomize v3.7+, kubectl 1.21+); Debian 12's own
# kubernetes-client (1.20) does not. Google's kubectl package installs versioned binaries beside its own.
kubectl=""
for candidate in kubectl /usr/lib/google-cloud-sdk/bin/kubectl /usr/lib/google-cloud-sdk/bin/kubectl.1.*; do
  command -v "$candidate" >/dev/null 2>&1 || [ -x "$candidate" ] || continue
  if "$candidate" kustomize "$deploy/overlays/cert-manager" >/dev/null 2>"$work/kustomize.err" ||
    ! grep -qiE 'unknown|component|not supported|invalid' "$work/kustomize.err"; then
    kubectl="$candidate"
    break
  fi
done
[ -n "$kubectl" ] || skip "no kubectl with kustomize components support (kubectl 1.21 or later) is installed"
echo "kustomize: $kubectl kustomize ($("$kubectl" version --client 2>/dev/null | grep -i kustomize | tr -d '\n'))"

# The validator's packages, exactly as locked, once per lockfile, outside the tree.
lock_hash="$(sha256sum "$validator_src/package-lock.json" | cut -c1-16)"
cache_root="${NODEMETER_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/nodemeter}"
modules_dir="$cache_root/deploy-validator-$lock_hash"
if [ ! -f "$modules_dir/.installed" ]; then
  mkdir -p "$cache_root"
  staging="$(mktemp -d "$cache_root/.deploy-validator.XXXXXX")"
  cp "$validator_src/package.json" "$validator_src/package-lock.json" "$staging/"
  if ! (cd "$staging" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >"$work/npm.log" 2>&1; then
    rm -rf "$staging"
    cat "$work/npm.log"
    skip "npm ci of tests/deploy/package-lock.json failed (is the npm registry reachable?)"
  fi
  touch "$staging/.installed"
  rm -rf "$modules_dir"
  mv "$staging" "$modules_dir"
fi
export NODE_PATH="$modules_dir/node_modules"
echo "validator: kubernetes-models from $modules_dir"

# --- 1. render -------------------------------------------------------------------------------------
if "$kubectl" kustomize "$deploy/kubernetes" >"$work/base.yaml" 2>"$work/err"; then
  pass "kustomize renders deploy/kubernetes ($(grep -c '^kind:' "$work/base.yaml") objects)"
else
  fail "kustomize cannot render deploy/kubernetes: $(cat "$work/err")"
fi
for variant in cert-manager prometheus-only; do
  if "$kubectl" kustomize "$deploy/overlays/$variant" >"$work/$variant.yaml" 2>"$work/err"; then
    pass "kustomize renders deploy/overlays/$variant ($(grep -c '^kind:' "$work/$variant.yaml") objects)"
  else
    fail "kustomize cannot render deploy/overlays/$variant: $(cat "$work/err")"
  fi
done

# Every file beside a kustomization is one it names (nothing written and forgotten).
unused=0
for dir in "$deploy/kubernetes" "$deploy/kubernetes/components/cert-manager"; do
  for f in "$dir"/*.yaml; do
    name="$(basename "$f")"
    [ "$name" = kustomization.yaml ] && continue
    if ! grep -qE "^ *(- )?(path: )?${name//./\\.}\$" "$dir/kustomization.yaml"; then
      fail "${f#"$src/"} is not named by its kustomization.yaml"
      unused=$((unused + 1))
    fi
  done
done
[ "$unused" -eq 0 ] && pass "every manifest file under deploy/kubernetes is named by its kustomization"

# --- 2. schemas ------------------------------------------------------------------------------------
# The renders, plus every complete manifest not rendered by kustomize. The component's patch files are
# fragments; the cert-manager render holds what they produce.
others=("$deploy/prometheus/servicemonitor.yaml" "$deploy/prometheus/rbac.yaml")
for f in "$deploy"/kubernetes/*.yaml "$deploy/kubernetes/components/cert-manager/certificates.yaml"; do
  [ "$(basename "$f")" = kustomization.yaml ] || others+=("$f")
done
if node "$validator_src/validate.js" "$work/base.yaml" "$work/cert-manager.yaml" "$work/prometheus-only.yaml" "${others[@]}" >"$work/validate.log"; then
  pass "schemas: $(tail -1 "$work/validate.log")"
else
  grep -v '^ok' "$work/validate.log" | sed 's/^/  /'
  fail "schemas: $(tail -1 "$work/validate.log")"
fi

# --- 3. security settings --------------------------------------------------------------------------
for variant in base cert-manager prometheus-only; do
  if node "$validator_src/check-security.js" "$variant" "$work/$variant.yaml" >"$work/security.log"; then
    pass "security settings: $(tail -1 "$work/security.log")"
  else
    sed 's/^/  /' "$work/security.log"
    fail "security settings of the $variant render"
  fi
done

# --- 4. controls: the checkers must be able to fail ------------------------------------------------
sed -e 's/readOnlyRootFilesystem: true/readOnlyRootFileSystem: true/' -e 's/containerPort: 10261/containerPort: "10261"/' \
  "$work/base.yaml" >"$work/broken-schema.yaml"
if node "$validator_src/validate.js" "$work/broken-schema.yaml" >"$work/control.log"; then
  fail "control: the validator accepted a misspelt field and a string port"
elif grep -q 'readOnlyRootFileSystem is not a field' "$work/control.log" &&
  grep -q 'containerPort must be integer' "$work/control.log"; then
  pass "control: the validator rejects a misspelt field and a string port"
else
  fail "control: the validator failed for another reason: $(grep -v '^ok' "$work/control.log")"
fi
sed -e 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' -e 's/maxUnavailable: 10%/maxUnavailable: 50%/' \
  -e 's/type: RuntimeDefault/type: Unconfined/' "$work/base.yaml" >"$work/broken-security.yaml"
if node "$validator_src/check-security.js" base "$work/broken-security.yaml" >"$work/control.log"; then
  fail "control: check-security accepted a writable root, a 50 % rollout and an unconfined seccomp profile"
elif grep -q 'readOnlyRootFilesystem' "$work/control.log" && grep -q '10% of nodes' "$work/control.log" &&
  grep -q 'seccompProfile RuntimeDefault' "$work/control.log"; then
  pass "control: check-security rejects a writable root, a 50 % rollout and an unconfined seccomp profile"
else
  fail "control: check-security failed for another reason: $(cat "$work/control.log")"
fi
if node "$validator_src/check-security.js" base "$work/cert-manager.yaml" >"$work/control.log"; then
  fail "control: check-security took the cert-manager render for the base"
else
  pass "control: the cert-manager render is not the base (no insecureSkipTLSVerify, CA injected)"
fi
# An overlay with a kustomization-wide namespace: kustomize moves the kube-system RoleBinding too.
mkdir -p "$work/namespaced"
cat >"$work/namespaced/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: metrics
resources:
  - $(realpath --relative-to="$work/namespaced" "$deploy/kubernetes")
EOF
if ! "$kubectl" kustomize "$work/namespaced" >"$work/namespaced.yaml" 2>"$work/err"; then
  fail "control: kustomize cannot render an overlay of the base: $(cat "$work/err")"
elif node "$validator_src/check-security.js" base "$work/namespaced.yaml" >"$work/control.log"; then
  fail "control: check-security accepted a render whose kube-system RoleBinding was moved"
elif grep -q 'nodemeter-aggregator-auth-reader stays in kube-system (is metrics)' "$work/control.log"; then
  pass "control: a kustomization-wide namespace moves the kube-system RoleBinding, and the check sees it"
else
  fail "control: the namespaced render failed for another reason: $(cat "$work/control.log")"
fi

# --- 5. Prometheus scrape configuration ------------------------------------------------------------
echo "test-token" >"$work/token"
# Targets as Kubernetes discovery (role pod) describes them: an agent's https-metrics port (kept), another
# port of the same pod and another application's pod (both dropped). Port 1 on loopback is closed: the
# scrapes fail fast, and only what relabelling made of the targets is read.
cat >"$work/targets.json" <<'EOF'
[
  {"targets": ["127.0.0.1:1"], "labels": {"__meta_kubernetes_namespace": "nodemeter",
    "__meta_kubernetes_pod_name": "nodemeter-agent-7xk2p", "__meta_kubernetes_pod_node_name": "node-a",
    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "nodemeter-agent",
    "__meta_kubernetes_pod_container_port_name": "https-metrics"}},
  {"targets": ["127.0.0.2:1"], "labels": {"__meta_kubernetes_namespace": "nodemeter",
    "__meta_kubernetes_pod_name": "nodemeter-agent-7xk2p", "__meta_kubernetes_pod_node_name": "node-a",
    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "nodemeter-agent",
    "__meta_kubernetes_pod_container_port_name": "debug"}},
  {"targets": ["127.0.0.3:1"], "labels": {"__meta_kubernetes_namespace": "nodemeter",
    "__meta_kubernetes_pod_name": "web-0", "__meta_kubernetes_pod_node_name": "node-b",
    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "web",
    "__meta_kubernetes_pod_container_port_name": "https-metrics"}}
]
EOF
if node "$validator_src/scrape-config.js" "$deploy/prometheus/scrape-config.yaml" "$work/prometheus.yaml" \
  "$work/targets.json" "$work/token" >"$work/scrape.log"; then
  pass "scrape config: kubernetes_sd_configs fields and the discovery labels it reads ($(tail -1 "$work/scrape.log"))"
else
  sed 's/^/  /' "$work/scrape.log"
  fail "scrape config: kubernetes_sd_configs"
fi
if promtool check config "$work/prometheus.yaml" >"$work/promtool.log" 2>&1; then
  pass "scrape config: promtool check config accepts the rest"
else
  fail "scrape config: promtool check config: $(cat "$work/promtool.log")"
fi

port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
prometheus --config.file="$work/prometheus.yaml" --web.listen-address="127.0.0.1:$port" \
  --storage.tsdb.path="$work/tsdb" >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!
targets=""
for _ in $(seq 1 60); do
  if targets="$(curl -sf "http://127.0.0.1:$port/api/v1/targets")" &&
    node -e 'const d=JSON.parse(process.argv[1]).data; process.exit(d.activeTargets.length + d.droppedTargets.length >= 9 ? 0 : 1)' "$targets"; then
    break
  fi
  kill -0 "$prometheus_pid" 2>/dev/null || break
  sleep 0.5
done
if [ -z "$targets" ]; then
  fail "scrape config: Prometheus did not answer on 127.0.0.1:$port: $(tail -5 "$work/prometheus.log")"
else
  # What relabelling made of the targets: one per job, the agent's port only, named by its node.
  if node -e '
    const d = JSON.parse(process.argv[1]).data;
    const got = d.activeTargets.map((t) => [t.scrapePool, t.scrapeUrl, JSON.stringify(t.labels)]).sort();
    const want = [
      ["nodemeter-agent", "https://127.0.0.1:1/metrics",
        JSON.stringify({instance: "node-a", job: "nodemeter-agent", namespace: "nodemeter", node: "node-a", pod: "nodemeter-agent-7xk2p"})],
      ["nodemeter-cadvisor", "https://127.0.0.1:1/metrics/cadvisor",
        JSON.stringify({instance: "node-a", job: "nodemeter-cadvisor", metrics_path: "/metrics/cadvisor", node: "node-a"})],
      ["nodemeter-resource", "https://127.0.0.1:1/metrics/resource",
        JSON.stringify({instance: "node-a", job: "nodemeter-resource", metrics_path: "/metrics/resource", node: "node-a"})],
    ];
    if (JSON.stringify(got) !== JSON.stringify(want) || d.droppedTargets.length !== 6) {
      console.log("got " + JSON.stringify(got) + " and " + d.droppedTargets.length + " dropped");
      process.exit(1);
    }' "$targets" >"$work/relabel.log"; then
    pass "scrape config: a real Prometheus keeps only the agents' https-metrics port, one target per endpoint, named by node"
  else
    fail "scrape config: relabelling: $(cat "$work/relabel.log")"
  fi
fi

echo "deploy_manifests: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
