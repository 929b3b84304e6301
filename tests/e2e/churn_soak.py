"""Churn soak: the real agent on real cgroups while pods come and go, containers restart (a new
cgroup under a new id, and the same cgroup path made again), cgroups are deleted while the agent
reads them, and clients scrape every endpoint the whole time.

Checked on every scrape: every endpoint answers 200 with a parsable body; no CPU rate served (the
Metrics API's and the Summary API's nanocores, and the rate between two scrapes of one
/metrics/resource counter) is negative or exceeds what the container's processes can burn (one
core per process: a burner all the time, any other while its interpreter starts; plus a
tolerance); a counter only goes down across a restart;
resource_scrape_error stays 0 and no cgroup read error is counted, because cgroups that vanish are
absence, not failure. Afterwards, with the node back to its starting pods: the agent's open
descriptors and tracked series are back to their baseline and its resident memory is within a
bound of it; in a long soak its memory also shows no steady growth.

SOAK_SECONDS sets how long the churn runs (default 40: the short form `make test` runs; `make soak`
runs it longer). Every cgroup and process made here is removed again, also on failure."""
import json
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from e2e import (V1, Agent, Node, fail, http_get, parse_exposition, proc_fd_count,  # noqa: E402
                 proc_rss_bytes, recreate_container, remove_pod)

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "40"))
INTERVAL_S = 0.5
WINDOW_S = 2.0
MAX_BURNERS = 2           # processes spinning at once (a 2-core machine; the agent needs CPU too)
MAX_CHURN_PODS = 10
# A rate is measured over at least an interval; read-time jitter of a few ms on 500 ms spans and a
# process's own start-up CPU (a fresh container is measured from its start) stay well inside this.
RATE_TOLERANCE_CORES = 0.25
# What the agent may keep beyond its baseline after churn: glibc keeps freed heap in its arenas
# (one per thread that allocates: sampler, server) and pages once touched stay resident; the
# snapshot caches are sized by the pods of the last pass, which is the baseline again.
RSS_TOLERANCE_BYTES = 8 << 20
# A connection that just closed can still be in its 2 s linger; everything else must be closed.
FD_TOLERANCE = 2
RESTART_SLACK_S = 2.0
# Under AddressSanitizer freed memory sits in a quarantine of up to 256 MiB: resident memory says
# nothing about leaks there (LeakSanitizer checks them at exit instead).
SANITIZED = os.environ.get("NODEMETER_SANITIZED") == "1"

ENDPOINTS = ("/metrics/resource", "/metrics/cadvisor", "/stats/summary",
             "/apis/metrics.k8s.io/v1beta1/pods", "/metrics")


def cpu_nanocores(q):
    """A Kubernetes CPU quantity in canonical form -> nanocores."""
    m = re.fullmatch(r"(\d+)([num]?)", q)
    if not m:
        raise ValueError(f"not a canonical CPU quantity: {q!r}")
    return int(m.group(1)) * {"n": 1, "u": 1000, "m": 10**6, "": 10**9}[m.group(2)]


class World:
    """What the churn made, for the scrapers' bounds. Keyed by (namespace, pod, container)."""

    def __init__(self):
        self.lock = threading.Lock()
        # key -> processes that container ever had at once. Each may use up to a core: a burner all
        # the time, any other while the interpreter starts (~50 ms of CPU within a few hundred ms,
        # which a pass that happens to straddle it measures as a fraction of a core).
        self.procs = {}
        self.live = set()     # keys of containers burning now
        self.restarts = {}    # key -> time of the last restart (the counter may go down then)
        self.failures = []
        self.scrapes = {p: 0 for p in ENDPOINTS}
        self.names = {}       # pod UID -> (namespace, name), for pods the agent serves by UID alone
        self.stats = {"pods_created": 0, "pods_removed": 0, "restarts_new_id": 0,
                      "restarts_same_path": 0, "deleted_while_read": 0}

    def bound_cores(self, key):
        with self.lock:
            return self.procs.get(key, 0)

    def made(self, pod):
        with self.lock:
            self.names[pod.uid] = (pod.namespace, pod.name)
        return pod

    def resolve(self, ns, pod):
        """A pod served under its UID alone (namespace "") is one whose containers, and with them
        the runtime state that names it, are already gone while its cgroup still is: the last pass
        or so of a pod being removed. Its bounds are those of the pod made with that UID."""
        if ns:
            return ns, pod
        with self.lock:
            return self.names.get(pod, (ns, pod))

    def pod_bound(self, ns, pod):
        with self.lock:
            return sum(v for (n, p, _), v in self.procs.items() if n == ns and p == pod)

    def restarted_since(self, key, t):
        with self.lock:
            return self.restarts.get(key, 0) >= t

    def failure(self, message):
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(message)
        print("FAIL " + message, flush=True)


def burning_count(world):
    with world.lock:
        return len(world.live)


def start_container(node, world, pod, c, burn):
    key = (pod.namespace, pod.name, c.name)
    with world.lock:
        # Counted before the process starts: a bound may be loose, never too tight.
        world.procs[key] = 1
        if burn:
            world.live.add(key)
    if burn:
        c.burn()
    else:
        c.run("import time; time.sleep(3600)")


def churn(node, world, stop, rng):
    pods = []
    serial = 0
    while not stop.is_set():
        action = rng.random()
        try:
            if (action < 0.3 and len(pods) < MAX_CHURN_PODS) or not pods:
                serial += 1
                pod = world.made(node.pod(f"churn-{serial}", "churn", rng.choice(["burstable", "besteffort"])))
                for i in range(rng.randint(1, 2)):
                    burn = burning_count(world) < MAX_BURNERS and rng.random() < 0.5
                    c = pod.add(f"{'burn' if burn else 'idle'}-{i}")
                    start_container(node, world, pod, c, burn)
                pods.append(pod)
                world.stats["pods_created"] += 1
            elif action < 0.5:
                # Its bounds stay: the agent may serve the pod for one more pass, and names are unique.
                pod = pods.pop(rng.randrange(len(pods)))
                remove_pod(node, pod)
                with world.lock:
                    world.live -= {(pod.namespace, pod.name, c.name) for c in pod.containers}
                world.stats["pods_removed"] += 1
            elif action < 0.7:
                # A restart as the kubelet does it: a new container (new id, new cgroup), same name.
                pod = rng.choice(pods)
                old = rng.choice([c for c in pod.containers if not c.sandbox])
                key = (pod.namespace, pod.name, old.name)
                with world.lock:
                    world.restarts[key] = time.time()
                    burn = key in world.live
                node.remove_container(old)
                pod.containers.remove(old)
                c = pod.add(old.name)
                start_container(node, world, pod, c, burn)
                world.stats["restarts_new_id"] += 1
            elif action < 0.85:
                # The same cgroup path made again: a new identity the path alone cannot tell apart.
                pod = rng.choice(pods)
                c = rng.choice([c for c in pod.containers if not c.sandbox])
                key = (pod.namespace, pod.name, c.name)
                with world.lock:
                    world.restarts[key] = time.time()
                    burn = key in world.live
                node.remove_container(c)
                recreate_container(node, c)
                start_container(node, world, pod, c, burn)
                world.stats["restarts_same_path"] += 1
            else:
                # A short-lived container: made and deleted again within about one pass.
                pod = rng.choice(pods)
                serial += 1
                c = pod.add(f"flash-{serial}")  # never a name seen before: no counter to continue
                start_container(node, world, pod, c, False)
                time.sleep(rng.uniform(0.05, INTERVAL_S))
                node.remove_container(c)
                pod.containers.remove(c)
                world.stats["deleted_while_read"] += 1
        except Exception as e:  # a failure of the test's own machinery ends the soak
            world.failure(f"churn step failed: {e!r}")
            stop.set()
        stop.wait(rng.uniform(0.05, 0.3))
    return pods


def flicker(node, pod, world, stop, rng):
    """Container cgroups made and removed again within milliseconds, over and over, so that some
    vanish between the agent's scan and its reads (or between two of its reads)."""
    n = 0
    while not stop.is_set():
        cid = f"{rng.getrandbits(256):064x}"
        dirs = [f"{V1}/{ctrl}/{pod.rel}/{cid}" for ctrl in node.controllers]
        try:
            for d in dirs:
                os.mkdir(d)
            time.sleep(rng.uniform(0, 0.02))
        finally:
            for d in reversed(dirs):
                if os.path.isdir(d):
                    os.rmdir(d)  # no process ever ran in it: removable at once
        n += 1
        time.sleep(rng.uniform(0, 0.01))
    world.stats["flickered"] = n


class Scraper(threading.Thread):
    def __init__(self, agent, world, stop, paths):
        super().__init__(daemon=True)
        self.agent, self.world, self.stop, self.paths = agent, world, stop, paths
        self.last = {}  # (namespace, pod, container) -> (cpu seconds, timestamp ms, scrape time)

    def run(self):
        while not self.stop.is_set():
            for path in self.paths:
                try:
                    self.scrape(path)
                except Exception as e:
                    self.world.failure(f"{path}: {e!r}")
                    return

    def scrape(self, path):
        began = time.time()
        status, _, body = http_get(self.agent.base + path, timeout=10)
        self.world.scrapes[path] += 1
        if status != 200:
            return self.world.failure(f"{path} answered {status}: {body[:200]}")
        if path == "/metrics/resource":
            self.check_resource(body, began)
        elif path == "/metrics/cadvisor" or path == "/metrics":
            parse_exposition(body)
        elif path == "/stats/summary":
            self.check_summary(json.loads(body))
        else:
            self.check_metrics_api(json.loads(body))

    def check_rate(self, what, key, nanocores, bound, detail=None):
        limit = (bound + RATE_TOLERANCE_CORES) * 1e9
        if nanocores < 0 or nanocores > limit:
            self.world.failure(f"{what} {key}: served {nanocores / 1e9:.3f} cores with {bound} "
                               f"process(es)" + (f"; {detail}" if detail else ""))

    def check_resource(self, text, began):
        parsed = parse_exposition(text)
        samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        if samples != len(parsed):
            self.world.failure(f"/metrics/resource repeats a series ({samples} samples, {len(parsed)} series)")
        error = parsed.get(("resource_scrape_error", frozenset()))
        if error is None or error[0] != 0:
            self.world.failure(f"resource_scrape_error is {error} during churn (no read really failed)")
        for (name, labels), (value, ts) in parsed.items():
            if name != "container_cpu_usage_seconds_total":
                continue
            lab = dict(labels)
            key = (*self.world.resolve(lab["namespace"], lab["pod"]), lab["container"])
            if value <= 0:
                self.world.failure(f"container_cpu_usage_seconds_total {key} is {value}")
            prev = self.last.get(key)
            self.last[key] = (value, ts, began)
            if prev is None or ts <= prev[1]:
                continue
            # A restart is recorded as it begins, before the old cgroup goes (killing and removing
            # takes up to a second or two on a loaded machine): one recorded since shortly before
            # the previous sample was read may lie between the two samples.
            restarted = self.world.restarted_since(key, prev[1] / 1000 - RESTART_SLACK_S)
            if value < prev[0]:
                if not restarted:
                    with self.world.lock:
                        last = self.world.restarts.get(key)
                    self.world.failure(f"{key}: counter went down {prev[0]} -> {value} without a restart "
                                       f"(samples read at {prev[1]} and {ts} ms, last restart "
                                       f"{'never' if last is None else f'at {last * 1000:.0f} ms'})")
                continue
            if restarted:
                continue
            rate = (value - prev[0]) / ((ts - prev[1]) / 1000)
            self.check_rate("/metrics/resource counter rate of", key, rate * 1e9,
                            self.world.bound_cores(key))

    def check_summary(self, doc):
        for pod in doc["pods"]:
            ref = pod["podRef"]
            for c in pod.get("containers", []):
                cpu = c.get("cpu", {})
                if "usageNanoCores" in cpu:
                    key = (*self.world.resolve(ref["namespace"], ref["name"]), c["name"])
                    self.check_rate("/stats/summary", key, cpu["usageNanoCores"], self.world.bound_cores(key))
            cpu = pod.get("cpu", {})
            if "usageNanoCores" in cpu:
                detail = {"startTime": pod.get("startTime"), "cpu": cpu,
                          "containers": [(c["name"], c.get("startTime"), c.get("cpu")) for c in pod.get("containers", [])]}
                ns, name = self.world.resolve(ref["namespace"], ref["name"])
                self.check_rate("/stats/summary pod", (ns, name), cpu["usageNanoCores"],
                                self.world.pod_bound(ns, name), detail)

    def check_metrics_api(self, doc):
        if doc.get("kind") != "PodMetricsList":
            return self.world.failure(f"Metrics API pods answered kind {doc.get('kind')}")
        for item in doc["items"]:
            meta = item["metadata"]
            for c in item["containers"]:
                key = (*self.world.resolve(meta["namespace"], meta["name"]), c["name"])
                self.check_rate("Metrics API", key, cpu_nanocores(c["usage"]["cpu"]), self.world.bound_cores(key))


def measure(agent):
    """Resident memory, open descriptors and tracked series, once the agent is quiet."""
    pid = agent.proc.pid
    resource = parse_exposition(agent.get("/metrics/resource")[2])
    selfm = parse_exposition(agent.get("/metrics")[2])
    time.sleep(2.5)  # the two connections above leave their linger state
    return {
        "rss": proc_rss_bytes(pid),
        "fds": proc_fd_count(pid),
        "series": len(resource),
        "containers": selfm.get(("nodemeter_containers", frozenset()), (None,))[0],
        # Reads of cgroups that vanished are counted with reason "gone": absence, not failure.
        "read_errors": sum(v for (n, l), (v, _) in selfm.items()
                           if n == "nodemeter_cgroup_read_errors_total" and dict(l)["reason"] not in ("gone", "unsupported")),
        "gone_reads": sum(v for (n, l), (v, _) in selfm.items()
                          if n == "nodemeter_cgroup_read_errors_total" and dict(l)["reason"] == "gone"),
    }


def main():
    rng = random.Random(int(os.environ.get("SOAK_SEED", "8")))
    with Node() as node:
        base_a = node.pod("base-a", "default", "burstable")
        base_b = node.pod("base-b", "prod", "guaranteed")
        world = World()
        for pod, name, burn in ((base_a, "burn-0", True), (base_a, "idle-0", False), (base_b, "idle-0", False)):
            start_container(node, world, pod, pod.add(name), burn)

        with Agent(f"--interval={int(INTERVAL_S * 1000)}ms", f"--window={int(WINDOW_S * 1000)}ms",
                   f"--containerd-state-dir={node.containerd}", "--node-name=soak-node") as agent:
            time.sleep(WINDOW_S + 1)
            for path in ENDPOINTS:  # caches and lazily made structures exist before the baseline
                http_get(agent.base + path)
            time.sleep(INTERVAL_S * 2)
            before = measure(agent)
            print(f"baseline: {before}", flush=True)

            stop = threading.Event()
            scrapers = [Scraper(agent, world, stop, ENDPOINTS[:3]), Scraper(agent, world, stop, ENDPOINTS[3:])]
            for s in scrapers:
                s.start()
            rss_trend = []
            churned = []
            churn_thread = threading.Thread(target=lambda: churned.extend(churn(node, world, stop, rng)), daemon=True)
            flicker_thread = threading.Thread(target=flicker, args=(node, base_b, world, stop, random.Random(rng.random())),
                                              daemon=True)
            began = time.time()
            churn_thread.start()
            flicker_thread.start()
            try:
                while time.time() - began < SOAK_SECONDS and not stop.is_set():
                    if agent.proc.poll() is not None:
                        world.failure(f"the agent exited with {agent.proc.returncode}")
                        break
                    rss_trend.append(proc_rss_bytes(agent.proc.pid))
                    time.sleep(min(2.0, SOAK_SECONDS / 20))
            finally:
                stop.set()
                churn_thread.join(60)
                flicker_thread.join(10)
                for s in scrapers:
                    s.join(30)
            soaked = time.time() - began

            # Back to the starting node: the churned pods go; one baseline container restarts in place.
            for pod in churned:
                remove_pod(node, pod)
            idle = base_b.containers[-1]
            node.remove_container(idle)
            recreate_container(node, idle)
            start_container(node, world, base_b, idle, False)
            time.sleep(WINDOW_S + 3 * INTERVAL_S)
            after = measure(agent)
            print(f"after {soaked:.0f} s of churn: {after}", flush=True)
            print(f"churn: {world.stats}; scrapes: {world.scrapes}", flush=True)
            if rss_trend:
                print(f"agent RSS during churn: min {min(rss_trend) >> 10} KiB, max {max(rss_trend) >> 10} KiB",
                      flush=True)

            if sum(v for k, v in world.stats.items() if k != "flickered") < SOAK_SECONDS:
                world.failure(f"too little churn to mean anything: {world.stats}")
            if min(world.scrapes.values()) < 5:
                world.failure(f"too few scrapes: {world.scrapes}")
            if after["series"] != before["series"] or after["containers"] != before["containers"]:
                world.failure(f"tracked series did not return to the baseline: {before} -> {after}")
            if after["fds"] > before["fds"] + FD_TOLERANCE:
                world.failure(f"open descriptors {before['fds']} -> {after['fds']}")
            if not SANITIZED and after["rss"] > before["rss"] + RSS_TOLERANCE_BYTES:
                world.failure(f"resident memory {before['rss'] >> 10} KiB -> {after['rss'] >> 10} KiB")
            if after["read_errors"] != 0:
                world.failure(f"{after['read_errors']} cgroup read errors counted: cgroups that vanish are absence")
            if after["gone_reads"] == 0:
                print("note: no read ever met a vanished cgroup (reason=\"gone\"); the race was not hit this run")
            # A leak grows with the churn: in a long soak the last quarter's memory is not above the
            # first quarter's (after warm-up) by more than the tolerance.
            if not SANITIZED and SOAK_SECONDS >= 300 and len(rss_trend) >= 20:
                q = len(rss_trend) // 4
                early, late = max(rss_trend[q:2 * q]), max(rss_trend[-q:])
                print(f"RSS trend: second quarter max {early >> 10} KiB, last quarter max {late >> 10} KiB")
                if late > early + RSS_TOLERANCE_BYTES // 2:
                    world.failure(f"resident memory grows under churn: {early >> 10} -> {late >> 10} KiB")
            code = agent.stop()
            if code != 0:
                world.failure(f"the agent exited with {code} on SIGTERM: {agent.output()[-2000:]}")

    if world.failures:
        fail(f"{len(world.failures)} problem(s), first: {world.failures[0]}")
    print(f"ok   churn soak: {soaked:.0f} s, {world.stats}, RSS {before['rss'] >> 10} -> {after['rss'] >> 10} KiB, "
          f"fds {before['fds']} -> {after['fds']}, series {before['series']} -> {after['series']}")


if __name__ == "__main__":
    main()
