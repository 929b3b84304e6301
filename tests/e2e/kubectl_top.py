"""A real kubectl 1.32 reads the agent's Metrics API through a stand-in for kube-apiserver's
aggregation layer: `kubectl top node` and `kubectl top pod` (all namespaces, one pod with its
containers, --sum, a field selector, a label selector) exit 0 and print what the processes in the
node's real cgroups did; unknown pods and nodes and malformed selectors give kubectl's usual errors.
Every kubectl output is printed (the README's sample comes from here)."""
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from apiserver_standin import ApiserverStandin  # noqa: E402
from e2e import Agent, Node, parse_exposition, series, skip  # noqa: E402

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"
METRICS = "/apis/metrics.k8s.io/"
NODE_NAME = "e2e-kubectl-node"
HOLD_MIB = 64
WINDOW_S = 3
checks = []


def check(ok, what):
    checks.append((ok, what))
    print(("ok   " if ok else "FAIL ") + what)
    return ok


def within(value, expected, tolerance):
    return expected > 0 and abs(value - expected) <= tolerance * expected


def proc_cpu_seconds(pid):
    """CPU time the process itself consumed (utime + stime), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuTrace:
    """Samples a process's own CPU time every 100 ms, so any past span can be measured."""

    def __init__(self, pid):
        self.pid, self.samples, self._stop = pid, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.time(), proc_cpu_seconds(self.pid)))
            self._stop.wait(0.1)

    def stop(self):
        self._stop.set()
        self.thread.join()

    def at(self, t):
        return min(self.samples, key=lambda s: abs(s[0] - t))[1]

    def cores(self, start, end):
        return (self.at(end) - self.at(start)) / (end - start)


class SampleInstants:
    """When the agent read the burner's cgroup, to the millisecond: the Metrics API's timestamps
    are whole seconds (metav1.Time), /metrics/resource carries each sample's own timestamp."""

    def __init__(self, agent):
        self.agent, self.instants, self._stop = agent, set(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            status, _, text = self.agent.get("/metrics/resource")
            if status == 200:
                v = series(parse_exposition(text), "container_cpu_usage_seconds_total", container="burner")
                if v and v[1] is not None:
                    self.instants.add(v[1] / 1000)
            self._stop.wait(0.2)

    def stop(self):
        self._stop.set()
        self.thread.join()

    def span(self, timestamp, window):
        """The (start, end) of a Metrics API window: the pass in `timestamp`'s second (a pass
        may straddle a second boundary) whose time minus `window` is another pass; None when no
        such pass was seen."""
        ts, w = rfc3339(timestamp), go_duration_seconds(window)
        # kubectl may have been answered from a pass made just before this poller's next look:
        # give the poller up to two of its rounds to record it before saying no such pass.
        for _ in range(3):
            seen = set(self.instants)  # the poller thread adds to the live set
            for t in sorted(seen):
                if ts - 0.05 <= t < ts + 1.05 and any(abs(o - (t - w)) < 0.005 for o in seen):
                    return t - w, t
            time.sleep(0.25)
        return None


def rfc3339(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def go_duration_seconds(text):
    """A Go duration as the Metrics API's window uses it: "3.002s", "3s", "1m0.5s", "500ms"."""
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = next(u for u in ("ms", "us", "µs", "ns", "h", "m", "s") if text.startswith(u, i))
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    return total


def millicores(text):
    assert text.endswith("m"), text
    return int(text[:-1])


def mebibytes(text):
    assert text.endswith("Mi"), text
    return int(text[:-2])


def table(stdout):
    """kubectl's tab-aligned table as a header list and rows of cells."""
    lines = [l.split() for l in stdout.splitlines() if l.strip()]
    return (lines[0], lines[1:]) if lines else ([], [])


class Kubectl:
    """Runs kubectl against the stand-in; the result carries what was forwarded to the agent."""

    def __init__(self, standin, home):
        self.standin, self.home = standin, home
        self.kubeconfig = standin.write_kubeconfig(home)

    def __call__(self, *args):
        mark = len(self.standin.recorded(METRICS))
        cmd = [KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir", os.path.join(self.home, "cache"),
               *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", "HOME": self.home})
        print(f"\n$ kubectl {' '.join(shlex.quote(a) for a in args)}")
        for line in r.stdout.splitlines():
            print(f"  {line}")
        for line in r.stderr.splitlines():
            print(f"  [stderr] {line}")
        print(f"  [exit {r.returncode}]")
        r.forwarded = self.standin.recorded(METRICS)[mark:]
        return r


def forwarded(result, path):
    """The requests the stand-in forwarded to the agent for this exact path during one kubectl run."""
    return [f for f in result.forwarded if f["path"] == path]


def wait_for_pods(agent, pods, window, timeout=20):
    """Until the agent's Metrics API lists every pod over a full window (the agent lists a pod
    after its second sample, measured from its start; the window then grows to --window)."""
    deadline = time.time() + timeout
    want = {(p.namespace, p.name) for p in pods}
    listed = {}
    while time.time() < deadline:
        status, _, body = agent.get("/apis/metrics.k8s.io/v1beta1/pods")
        if status == 200:
            listed = {(i["metadata"]["namespace"], i["metadata"]["name"]): go_duration_seconds(i["window"])
                      for i in json.loads(body)["items"]}
            if want <= set(listed) and all(listed[k] >= window - 0.1 for k in want):
                return True
        time.sleep(0.25)
    print(f"the agent lists {sorted(listed.items())}, expected {sorted(want)} over {window}s")
    return False


def main():
    if not os.access(KUBECTL, os.X_OK):
        skip(f"{KUBECTL} is missing (the google-cloud-cli kubectl package provides it)")
    home = tempfile.mkdtemp(prefix="nodemeter-kubectl-")
    try:
        with Node() as node:
            run(node, home)
    except Exception:  # an unexpected kubectl output or agent answer: a failure, reported below
        traceback.print_exc()
        check(False, "the test ran to its end")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    failed = [w for ok, w in checks if not ok]
    print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed")
    for w in failed:
        print(f"  failed: {w}")
    sys.exit(1 if failed else 0)


def run(node, home):
    # The runtime pod source (containerd's state dir) gives names and namespaces but no labels;
    # labels come with the Kubernetes pod source. So `top pod -l app=web` finds nothing here, and
    # what is checked is that the selector reaches the agent and kubectl answers as it does then.
    web = node.pod("web-1", "shop", "burstable")
    burner = web.add("burner")
    sidecar = web.add("sidecar")
    idle = node.pod("idle-0", "shop", "besteffort")
    idle_main = idle.add("main")
    cache = node.pod("cache-0", "data", "guaranteed")
    holder = cache.add("holder")
    burn = burner.burn()
    holder.hold_memory(HOLD_MIB)
    sidecar.run("import time; time.sleep(3600)")
    idle_main.run("import time; time.sleep(3600)")
    time.sleep(1.5)  # let the holder touch its pages
    trace = CpuTrace(burn.pid)
    try:
        measure(node, home, trace, (web, idle, cache), holder)
    finally:
        trace.stop()


def measure(node, home, trace, pods, holder):
    with Agent("--interval=1s", f"--window={WINDOW_S}s", f"--node-name={NODE_NAME}",
               f"--containerd-state-dir={node.containerd}") as agent, \
            ApiserverStandin(agent.port, NODE_NAME, cpu=str(os.cpu_count())) as standin:
        instants = SampleInstants(agent)
        try:
            top(agent, standin, Kubectl(standin, home), trace, instants, pods, holder)
        finally:
            instants.stop()


def top(agent, standin, kubectl, trace, instants, pods, holder):
    cpus = os.cpu_count()

    def burned_m(item, what):
        """What the burner burned over the window the agent used for this item, in millicores."""
        span = instants.span(item["timestamp"], item["window"])
        check(span is not None, f"{what}'s window ({item['timestamp']}, {item['window']}) is two passes the "
              f"agent made")
        return trace.cores(*span) * 1000 if span else 0

    for p in pods:
        standin.add_pod(p.name, p.namespace, p.uid)
    if not check(wait_for_pods(agent, pods, WINDOW_S),
                 f"the agent's Metrics API lists the three pods over a full {WINDOW_S}s window"):
        print(agent.output())
        return

    # --- top node ----------------------------------------------------------------------
    r = kubectl("top", "node")
    header, rows = table(r.stdout)
    check(r.returncode == 0 and header == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
          and len(rows) == 1 and rows[0][0] == NODE_NAME,
          "`top node` exits 0 with one line for the node")
    node_row = rows[0] if rows else None
    node_fw = forwarded(r, "/apis/metrics.k8s.io/v1beta1/nodes")
    r = kubectl("top", "node", NODE_NAME)
    header, rows = table(r.stdout)
    check(r.returncode == 0 and len(rows) == 1 and rows[0][0] == NODE_NAME
          and len(forwarded(r, f"/apis/metrics.k8s.io/v1beta1/nodes/{NODE_NAME}")) == 1,
          "`top node NAME` exits 0 with the node it got from the agent by name")
    if node_row and len(node_row) == 5:
        cpu_m, cpu_pct = millicores(node_row[1]), int(node_row[2].rstrip("%"))
        mem_mi, mem_pct = mebibytes(node_row[3]), int(node_row[4].rstrip("%"))
        check(abs(cpu_pct - cpu_m / (cpus * 1000) * 100) <= 1,
              f"the node's CPU% {cpu_pct}% is its usage {cpu_m}m over the allocatable {cpus} cores")
        check(abs(mem_pct - mem_mi * 2**20 / standin.memory_bytes * 100) <= 1,
              f"the node's MEMORY% {mem_pct}% is its usage {mem_mi}Mi over the allocatable "
              f"{standin.memory_bytes // 2**20}Mi")
        if check(len(node_fw) == 1 and node_fw[0]["status"] == 200, "`top node` reached the agent's nodes list"):
            burned = burned_m(json.loads(node_fw[0]["body"])["items"][0], "the node")
            check(cpu_m >= 0.8 * burned, f"the node's {cpu_m}m includes the burner's {burned:.0f}m")
        check(mem_mi >= HOLD_MIB, f"the node's memory {mem_mi}Mi includes the holder's {HOLD_MIB}Mi")

    # --- top pod -A --------------------------------------------------------------------
    r = kubectl("top", "pod", "-A")
    header, rows = table(r.stdout)
    listed = {(row[0], row[1]): row for row in rows if len(row) == 4}
    check(r.returncode == 0 and header == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
          and set(listed) == {("shop", "web-1"), ("shop", "idle-0"), ("data", "cache-0")},
          "`top pod -A` exits 0 and lists the three pods in their namespaces")
    fw = forwarded(r, "/apis/metrics.k8s.io/v1beta1/pods")
    check(len(fw) == 1 and fw[0]["status"] == 200, "`top pod -A` reached the agent's all-namespaces pod list")
    if ("data", "cache-0") in listed:
        mi = mebibytes(listed[("data", "cache-0")][3])
        ws = holder.working_set() / 2**20
        check(mi >= HOLD_MIB and abs(mi - ws) <= max(2, 0.05 * ws),
              f"the holder's pod uses {mi}Mi: at least {HOLD_MIB}Mi and its working set {ws:.1f}Mi")
    if ("shop", "web-1") in listed and fw:
        item = next(i for i in json.loads(fw[0]["body"])["items"] if i["metadata"]["name"] == "web-1")
        burned = burned_m(item, "web-1")
        m = millicores(listed[("shop", "web-1")][2])
        check(within(m, burned, 0.2),
              f"web-1 uses {m}m, as its burner burned {burned:.0f}m over the window ({item['window']})")

    # --- top pod -n NS NAME --containers -----------------------------------------------
    r = kubectl("top", "pod", "-n", "shop", "web-1", "--containers")
    header, rows = table(r.stdout)
    containers = {row[1]: row for row in rows if len(row) == 4 and row[0] == "web-1"}
    check(r.returncode == 0 and header == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
          and set(containers) == {"burner", "sidecar"},
          "`top pod -n shop web-1 --containers` exits 0 with the burner and the sidecar, not the sandbox")
    fw = forwarded(r, "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods/web-1")
    check(len(fw) == 1 and fw[0]["status"] == 200, "kubectl got the pod from the agent by name")
    if "burner" in containers and fw:
        item = json.loads(fw[0]["body"])
        burned = burned_m(item, "web-1")
        m = millicores(containers["burner"][2])
        check(within(m, burned, 0.2),
              f"the burner container uses {m}m, as it burned {burned:.0f}m over the window ({item['window']})")
        check(millicores(containers["sidecar"][2]) <= 20, "the sleeping sidecar uses (almost) no CPU")
    if fw:
        check(fw[0]["accept"].startswith("application/vnd.kubernetes.protobuf")
              and fw[0]["content_type"] == "application/json",
              f"kubectl asked for protobuf ({fw[0]['accept']}) and took the agent's "
              f"{fw[0]['content_type']}")

    # --- top pod --sum -n NS -------------------------------------------------------------
    r = kubectl("top", "pod", "--sum", "-n", "shop")
    lines = [l.split() for l in r.stdout.splitlines() if l.strip()]
    rows = [l for l in lines[1:] if len(l) == 3]
    sums = [l for l in lines[1:] if len(l) == 2 and l[0].endswith("m") and l[1].endswith("Mi")]
    check(r.returncode == 0 and sorted(row[0] for row in rows) == ["idle-0", "web-1"] and len(sums) == 1,
          "`top pod --sum -n shop` exits 0 with shop's two pods and a sum line")
    if rows and len(sums) == 1:
        cpu_sum, mem_sum = millicores(sums[0][0]), mebibytes(sums[0][1])
        check(abs(cpu_sum - sum(millicores(row[1]) for row in rows)) <= len(rows)
              and abs(mem_sum - sum(mebibytes(row[2]) for row in rows)) <= len(rows),
              f"the sum line {cpu_sum}m {mem_sum}Mi adds up the pods")

    # --- a field selector and a label selector reach the agent ---------------------------
    r = kubectl("top", "pod", "-n", "shop", "--field-selector", "metadata.name=idle-0")
    header, rows = table(r.stdout)
    check(r.returncode == 0 and [row[0] for row in rows] == ["idle-0"],
          "`top pod --field-selector metadata.name=idle-0` lists only idle-0")
    fw = forwarded(r, "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods")
    check(len(fw) == 1 and fw[0]["params"].get("fieldSelector") == ["metadata.name=idle-0"],
          f"the fieldSelector reached the agent ({fw[0]['query'] if fw else 'no request'})")

    r = kubectl("top", "pod", "-l", "app=web", "-n", "shop")
    check(r.returncode == 0 and r.stdout.strip() == ""
          and "No resources found in shop namespace." in r.stderr,
          "`top pod -l app=web -n shop` exits 0 with kubectl's \"No resources found in shop namespace.\"")
    fw = forwarded(r, "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods")
    check(len(fw) == 1 and fw[0]["params"].get("labelSelector") == ["app=web"] and fw[0]["status"] == 200
          and json.loads(fw[0]["body"]).get("items") == [],
          f"the labelSelector reached the agent, which applied it ({fw[0]['query'] if fw else 'no request'})")

    # --- kubectl get podmetrics asks the agent for a Table ---------------------------------
    r = kubectl("get", "podmetrics", "-n", "shop")
    header, rows = table(r.stdout)
    fw = forwarded(r, "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods")
    check(r.returncode == 0 and header[:1] == ["NAME"] and sorted(row[0] for row in rows) == ["idle-0", "web-1"]
          and len(fw) == 1 and "as=Table" in fw[0]["accept"] and fw[0]["status"] == 200,
          "`get podmetrics -n shop` exits 0 with a row per pod from the agent's Table")

    # --- errors ----------------------------------------------------------------------------
    r = kubectl("top", "pod", "-n", "shop", "nope")
    check(r.returncode != 0 and 'Error from server (NotFound)' in r.stderr and '"nope" not found' in r.stderr,
          "an unknown pod gives kubectl's NotFound error and a non-zero exit")
    r = kubectl("top", "node", "nope")
    check(r.returncode != 0 and 'Error from server (NotFound)' in r.stderr and '"nope" not found' in r.stderr,
          "an unknown node gives kubectl's NotFound error and a non-zero exit")
    r = kubectl("top", "pod", "-n", "shop", "-l", "a in (b")
    check(r.returncode != 0 and "unable to parse requirement" in r.stderr
          and not r.forwarded,
          "a malformed selector is refused by kubectl itself with its parse error")
    # The same selector sent raw reaches the agent, whose 400 Status kubectl shows as BadRequest.
    q = urllib.parse.urlencode({"labelSelector": "a in (b"})
    r = kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?{q}")
    fw = forwarded(r, "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods")
    check(r.returncode != 0 and "Error from server (BadRequest)" in r.stderr
          and len(fw) == 1 and fw[0]["status"] == 400,
          "a malformed selector sent to the agent answers 400, which kubectl reports as BadRequest")

    forwarded_all = standin.recorded("/apis/metrics.k8s.io/")
    check(all(f["content_type"] == "application/json" for f in forwarded_all),
          "every Metrics API answer the agent gave is application/json")
    check(agent.get("/healthz")[0] == 200, "the agent still answers /healthz")


if __name__ == "__main__":
    main()
