"""A small cluster, end to end, with the security a production one has: three agents (distinct
--node-name, each on its own copy of a fixture node whose CPU counters advance at a known rate)
name their pods from a fake Kubernetes API server (TLS, pods watch, TokenReview,
SubjectAccessReview) and serve HTTPS with webhook authorization; one aggregator collects them and
serves the cluster's Metrics API over HTTPS, trusting kube-apiserver's front-proxy client
certificate (from the extension-apiserver-authentication ConfigMap) and asking a
SubjectAccessReview for every request. A kube-apiserver stand-in presents that certificate with
X-Remote-User, and a real kubectl 1.32 runs `top node`, `top pod -A` and `top pod -l` through it.

Refusals: no client certificate, an untrusted one, one whose name is not allowed, and a user the
review denies, at the aggregator; no token, and a token whose user is denied, at an agent. Faults:
the API server drops the watches, answers 500s and 410 Gone; the agents keep serving and converge
on a label change made meanwhile."""
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from apiserver_standin import ApiserverStandin, BackendTls  # noqa: E402
from cluster import CpuBumper, FixtureNode, Pki  # noqa: E402
from e2e import binary, free_port, skip  # noqa: E402
from fake_apiserver import FakeApiServer  # noqa: E402

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"
NODES = ["e2e-node-0", "e2e-node-1", "e2e-node-2"]
CORES = 0.25  # each app container's CPU, as the bumper advances its counter
AGENT_SA = "system:serviceaccount:nodemeter:nodemeter-agent"
AGGREGATOR_SA = "system:serviceaccount:nodemeter:nodemeter-aggregator"
checks = []


def check(ok, what):
    checks.append((ok, what))
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    return ok


def within(value, expected, tolerance):
    return abs(value - expected) <= tolerance * expected


def app_label(name):
    return name.split("-")[0]  # web-6d4cf56db6-x7k2p -> web, db-0 -> db, kube-apiserver-… -> kube


class Process:
    """A nodemeter command with its output in a file; ended by PID with SIGTERM."""

    def __init__(self, args, name):
        self.name = name
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary(), *args], stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def https(url, cert=None, headers=None, token=None, ca=None):
    """(status, body) of a GET over TLS; the server's certificate checked against `ca` if given."""
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
    if ca:
        ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(*cert)
    req = urllib.request.Request(url, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what, predicate, timeout=40):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.5)
    check(False, f"{what} within {timeout} s (last: {last!r})")
    return None


def kubectl(kubeconfig, *args):
    r = subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, *args], capture_output=True, text=True,
                       timeout=60)
    print(f"$ kubectl {' '.join(args)}  (exit {r.returncode})\n{r.stdout}{r.stderr}", flush=True)
    return r


def table(text):
    lines = [line.split() for line in text.strip().splitlines()]
    return lines[1:] if lines else []


def millicores(text):
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def write_kubeconfig(path, server, ca, token):
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "e2e",
              "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": ca}}],
              "users": [{"name": "e2e", "user": {"token": token}}],
              "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}]}
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def pod_object(node, index, pod):
    containers = [c for c in pod["containers"] if not c["sandbox"]]
    started = "2026-01-01T00:00:00Z"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{pod['name']}-n{index}", "namespace": pod["namespace"], "uid": pod["uid"],
                     "labels": {"app": app_label(pod["name"]), "node-index": str(index)}},
        "spec": {"nodeName": node.name, "containers": [{"name": c["name"]} for c in containers]},
        "status": {"phase": "Running", "podIP": f"10.0.{index}.{len(pod['name'])}", "startTime": started,
                   "containerStatuses": [
                       {"name": c["name"], "containerID": "containerd://" + c["id"], "ready": True,
                        "restartCount": 0, "state": {"running": {"startedAt": started}}}
                       for c in containers]},
    }


def main():
    if not os.access(KUBECTL, os.X_OK):
        skip(f"{KUBECTL} is not installed (google-cloud-cli's kubectl 1.32)")
    if shutil.which("openssl") is None:
        skip("the openssl command is not installed")
    tmp = tempfile.mkdtemp(prefix="nodemeter-cluster-")
    started = []
    bumper = api = None
    try:
        pki = Pki(os.path.join(tmp, "pki"))
        cluster_ca = pki.ca("cluster-ca", "kubernetes")
        api_pair = pki.leaf("apiserver", "cluster-ca", "kube-apiserver", server_ips=["127.0.0.1"], client=False)
        front_proxy_ca = pki.ca("front-proxy-ca", "front-proxy-ca")
        front_proxy = pki.leaf("front-proxy-client", "front-proxy-ca", "front-proxy-client")
        not_allowed = pki.leaf("other-client", "front-proxy-ca", "someone-else")
        pki.ca("rogue-ca", "rogue")
        rogue = pki.leaf("rogue-client", "rogue-ca", "front-proxy-client")
        agent_ca = pki.ca("agent-ca", "nodemeter-agents")
        agent_pair = pki.leaf("agent", "agent-ca", "nodemeter-agent", server_ips=["127.0.0.1"], client=False)

        api = FakeApiServer(tls_cert=api_pair[0], tls_key=api_pair[1]).start()
        api.set_tokens({
            "agent-token": {"username": AGENT_SA, "groups": ["system:serviceaccounts"]},
            "aggregator-token": {"username": AGGREGATOR_SA, "groups": ["system:serviceaccounts"]},
            "mallory-token": {"username": "mallory", "groups": ["system:authenticated"]},
        })
        api.set_policy([
            {"user": AGGREGATOR_SA, "verb": "get", "resource": "nodes", "subresource": "metrics"},
            {"user": "alice", "verb": "*", "resource": "*"},
            {"user": "alice", "verb": "get", "path": "*"},
        ])
        with open(front_proxy_ca) as f:
            api.set_configmap({
                "requestheader-client-ca-file": f.read(),
                "requestheader-allowed-names": json.dumps(["front-proxy-client"]),
                "requestheader-username-headers": json.dumps(["X-Remote-User"]),
                "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
                "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
            })
        agent_kc = write_kubeconfig(os.path.join(tmp, "agent.kubeconfig"), api.url, cluster_ca, "agent-token")
        aggregator_kc = write_kubeconfig(os.path.join(tmp, "aggregator.kubeconfig"), api.url, cluster_ca,
                                         "aggregator-token")

        nodes = [FixtureNode(os.path.join(tmp, name), name, i) for i, name in enumerate(NODES)]
        for i, node in enumerate(nodes):
            for pod in node.pods:
                api.put_pod(pod_object(node, i, pod))
        bumper = CpuBumper(nodes, CORES)

        agent_ports = []
        for node in nodes:
            port = free_port()
            agent_ports.append(port)
            started.append(Process(
                ["agent", f"--listen=127.0.0.1:{port}", f"--node-name={node.name}",
                 f"--cgroup-root={node.cgroup}", f"--proc-root={node.proc}",
                 f"--containerd-state-dir={node.containerd}", "--interval=1s", "--window=3s",
                 "--pod-source=kubernetes", f"--kubeconfig={agent_kc}",
                 f"--tls-cert-file={agent_pair[0]}", f"--tls-private-key-file={agent_pair[1]}",
                 "--authorization=webhook"], node.name))
        aggregator_port = free_port()
        aggregator = Process(
            ["aggregator", f"--listen=127.0.0.1:{aggregator_port}", "--resolution=2s",
             "--agents=" + ",".join(f"https://127.0.0.1:{p}" for p in agent_ports),
             f"--agent-ca-file={agent_ca}", f"--kubeconfig={aggregator_kc}"], "aggregator")
        started.append(aggregator)
        agg = f"https://127.0.0.1:{aggregator_port}"

        for proc, port in zip(started, agent_ports + [aggregator_port]):
            ok = wait_for(f"{proc.name} answers /healthz over HTTPS",
                          lambda p=port: https(f"https://127.0.0.1:{p}/healthz")[0] == 200, 20)
            check(bool(ok), f"{proc.name} serves HTTPS; /healthz is open without credentials")

        # --- the agents: kubelet-style authentication and authorization ------------------------
        agent0 = f"https://127.0.0.1:{agent_ports[0]}"
        status, body = https(agent0 + "/metrics/resource", ca=agent_ca)
        check(status == 401 and '"reason":"Unauthorized"' in body.replace(" ", ""),
              f"agent: no token -> 401 Unauthorized Status ({status})")
        status, body = https(agent0 + "/metrics/resource", token="mallory-token", ca=agent_ca)
        check(status == 403 and "subresource=metrics" in body,
              f"agent: a user the review denies -> 403 naming nodes/metrics ({status}: {body[:160]})")
        status, body = https(agent0 + "/metrics/view", token="aggregator-token", ca=agent_ca)
        check(status == 200 and '"pods"' in body, f"agent: the aggregator's token -> 200 ({status})")
        sars = api.reviews()["subjectaccessreviews"]
        asked = [s["spec"] for s in sars if s["spec"].get("user") == AGGREGATOR_SA]
        check(any((s.get("resourceAttributes") or {}).get("subresource") == "metrics"
                  and s["resourceAttributes"].get("resource") == "nodes"
                  and s["resourceAttributes"].get("name") == NODES[0] for s in asked),
              "agent: SubjectAccessReview asked get nodes/metrics for its own node name")

        # --- the agents name their pods from the API ---------------------------------------------
        def agent_named():
            status, body = https(agent0 + "/metrics/view", token="aggregator-token", ca=agent_ca)
            return status == 200 and "web-6d4cf56db6-x7k2p-n0" in body and body
        body = wait_for("agent 0 names pods from the API server", agent_named)
        check(bool(body), "agent 0 lists its pods under the API server's names")
        status, body = https(agent0 + "/apis/metrics.k8s.io/v1beta1/pods", token="aggregator-token",
                             ca=agent_ca)
        check(status == 403 and "subresource=proxy" in body,
              f"agent: other paths need nodes/proxy, as on the kubelet ({status})")

        # --- the aggregator behind the stand-in ---------------------------------------------------
        with ApiserverStandin(aggregator_port, NODES[0], nodes=NODES,
                              backend_tls=BackendTls(*front_proxy), remote_user="alice",
                              remote_groups=["system:authenticated"]) as standin, \
                ApiserverStandin(aggregator_port, NODES[0], nodes=NODES,
                                 backend_tls=BackendTls(*front_proxy), remote_user="mallory") as denied:
            for i, node in enumerate(nodes):
                for pod in node.pods:
                    obj = pod_object(node, i, pod)
                    standin.add_pod(obj["metadata"]["name"], pod["namespace"], pod["uid"],
                                    obj["metadata"]["labels"], node=node.name)
            kc = standin.write_kubeconfig(tmp)
            os.makedirs(os.path.join(tmp, "denied"))
            denied_kc = denied.write_kubeconfig(os.path.join(tmp, "denied"))

            def three_nodes():
                r = kubectl(kc, "top", "node", "--no-headers=false")
                rows = table(r.stdout) if r.returncode == 0 else []
                return len(rows) == 3 and rows
            rows = wait_for("kubectl top node shows the three nodes", three_nodes, 60)
            if rows:
                check(sorted(r[0] for r in rows) == NODES, f"kubectl top node: {sorted(r[0] for r in rows)}")
                expected = 5 * CORES * 1000  # five app containers per node, each at CORES
                for r in rows:
                    check(within(millicores(r[1]), expected, 0.15),
                          f"kubectl top node {r[0]}: {r[1]} against {expected:.0f}m advanced")

            r = kubectl(kc, "top", "pod", "-A")
            rows = table(r.stdout)
            check(r.returncode == 0 and len(rows) == 12, f"kubectl top pod -A: 12 pods ({len(rows)})")
            for row in rows:
                ns, name, cpu = row[0], row[1], millicores(row[2])
                want = 2 * CORES * 1000 if name.startswith("web-") else CORES * 1000
                check(within(cpu, want, 0.2), f"kubectl top pod {ns}/{name}: {row[2]} against {want:.0f}m")
            r = kubectl(kc, "top", "pod", "-A", "-l", "app=web")
            rows = table(r.stdout)
            check(r.returncode == 0 and sorted(row[1] for row in rows)
                  == [f"web-6d4cf56db6-x7k2p-n{i}" for i in range(3)],
                  f"kubectl top pod -A -l app=web: the three web pods ({[row[1] for row in rows]})")
            r = kubectl(kc, "top", "pod", "-n", "default", "-l", "app in (db),node-index!=0")
            rows = table(r.stdout)
            check(r.returncode == 0 and sorted(row[0] for row in rows) == ["db-0-n1", "db-0-n2"],
                  f"kubectl top pod -l 'app in (db),node-index!=0': ({[row[0] for row in rows]})")
            forwarded = standin.recorded("/apis/metrics.k8s.io/")
            check(any("labelSelector" in f["params"] for f in forwarded),
                  "the label selector reached the aggregator")

            r = kubectl(denied_kc, "top", "pod", "-A")
            check(r.returncode != 0 and "forbidden" in (r.stderr + r.stdout).lower(),
                  "kubectl top as a user the review denies fails with Forbidden")

            # --- refusals at the aggregator, asked directly -------------------------------------
            nodes_url = agg + "/apis/metrics.k8s.io/v1beta1/nodes"
            alice = {"X-Remote-User": "alice", "X-Remote-Group": "system:authenticated"}
            status, body = https(nodes_url, headers=alice)
            check(status == 401, f"aggregator: no client certificate -> 401 ({status})")
            status, body = https(nodes_url, cert=rogue, headers=alice)
            check(status == 401, f"aggregator: a certificate from an untrusted CA -> 401 ({status})")
            status, body = https(nodes_url, cert=not_allowed, headers=alice)
            check(status == 401, f"aggregator: a front-proxy CN not in allowed names -> 401 ({status})")
            status, body = https(nodes_url, cert=front_proxy, headers={"X-Remote-User": "mallory"})
            check(status == 403 and '"reason":"Forbidden"' in body.replace(" ", ""),
                  f"aggregator: a user the review denies -> 403 Forbidden Status ({status})")
            status, body = https(agg + "/apis/metrics.k8s.io/v1beta1", cert=front_proxy)
            check(status == 401, f"aggregator: discovery needs authentication too ({status})")
            status, body = https(nodes_url, cert=front_proxy, headers=alice)
            check(status == 200 and all(n in body for n in NODES),
                  f"aggregator: alice lists the three nodes ({status})")
            sars = api.reviews()["subjectaccessreviews"]
            check(any(s["spec"].get("user") == "alice"
                      and (s["spec"].get("resourceAttributes") or {}).get("group") == "metrics.k8s.io"
                      for s in sars), "aggregator: SubjectAccessReview for alice in group metrics.k8s.io")

            # --- faults at the API server: agents keep serving and converge ---------------------
            api.set_faults(drop_watches=True, fail_next=4, fail_status=500)
            pod0 = pod_object(nodes[0], 0, nodes[0].pods[1])
            pod0["metadata"]["labels"]["tier"] = "frontend"
            api.put_pod(pod0)
            r = kubectl(kc, "top", "pod", "-A")
            check(r.returncode == 0 and len(table(r.stdout)) == 12,
                  "kubectl top pod -A keeps answering while the API server fails")
            api.set_faults(gone_next=2, gone_mode="status")
            api.expire()

            def relabelled():
                r = kubectl(kc, "top", "pod", "-A", "-l", "tier=frontend")
                return r.returncode == 0 and [row[1] for row in table(r.stdout)] == [pod0["metadata"]["name"]]
            check(bool(wait_for("a label set during the faults reaches kubectl", relabelled, 60)),
                  "after dropped watches, 500s and 410 Gone the agents converge on the new label")
            status, body = https(agent0 + "/readyz?verbose", ca=agent_ca)
            check(status == 200 and "kubernetes-pods ok" in body, f"agent /readyz?verbose: {body.strip()!r}")
            status, body = https(agent0 + "/metrics", token="aggregator-token", ca=agent_ca)
            relists = re.search(r"^nodemeter_kubernetes_pods_watch_relists_gone_total (\S+)$", body, re.M)
            check(relists is not None and float(relists.group(1)) >= 1,
                  f"agent metrics count the re-list after 410 Gone ({relists and relists.group(1)})")

        # --- an agent stops: the aggregator forgets its node, the others keep serving -----------
        started[2].stop()

        def two_nodes():
            status, body = https(agg + "/apis/metrics.k8s.io/v1beta1/nodes", cert=front_proxy,
                                 headers={"X-Remote-User": "alice"})
            return status == 200 and NODES[2] not in body and NODES[0] in body and NODES[1] in body
        check(bool(wait_for("the aggregator forgets a stopped agent's node", two_nodes, 30)),
              "a stopped agent's node leaves the cluster view; the others stay")
        status, body = https(agg + "/metrics", cert=front_proxy, headers={"X-Remote-User": "alice"})
        check(status == 200 and "process_resident_memory_bytes" in body,
              f"aggregator /metrics answers an authorized caller ({status})")
    except Exception:
        traceback.print_exc()
        check(False, "the test ran to its end")
    finally:
        if bumper:
            bumper.stop()
        for p in started:
            code = p.stop()
            if code not in (0, None):
                check(False, f"{p.name} exited with {code}")
        if any(not ok for ok, _ in checks):
            for p in started:
                print(f"--- {p.name} output ---\n{p.output()[-4000:]}")
        if api:
            api.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [what for ok, what in checks if not ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    sys.exit(1 if failed or not checks else 0)


if __name__ == "__main__":
    main()
