"""The real agent on real cgroups laid out like a node: the values it serves on /metrics/resource
and /metrics/cadvisor match the kernel's own counters and what the processes did; promtool accepts
every exposition; a real Prometheus scraping it computes the burner's rate; HTTP abuse leaves it
answering /healthz; SIGTERM ends it with exit 0."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from e2e import Agent, Node, fail, free_port, http_get, parse_exposition, series  # noqa: E402

HOLD_MIB = 64
checks = []


def check(ok, what):
    checks.append((ok, what))
    print(("ok   " if ok else "FAIL ") + what)


def within(value, expected, tolerance):
    return expected > 0 and abs(value - expected) <= tolerance * expected


# cAdvisor types container_memory_failcnt as a counter without the _total suffix; promtool's
# linter flags that, and nodemeter keeps cAdvisor's name and type on purpose.
KNOWN_LINT = ('container_memory_failcnt counter metrics should have "_total" suffix',)


def promtool_check(name, text):
    if not shutil.which("promtool"):
        fail("promtool is missing (scripts/deps.sh test installs the prometheus package)")
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    # Exit 0: clean. Exit 3: lint findings only (one per line). Anything else: a parse error.
    findings = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    unexpected = [l for l in findings if not any(k in l for k in KNOWN_LINT)]
    check(r.returncode in (0, 3) and not unexpected,
          f"promtool check metrics accepts {name} ({'; '.join(findings)[:300]})")


def proc_cpu_seconds(pid):
    """CPU time the process itself consumed (utime + stime), in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_prometheus(agent_port):
    data = tempfile.mkdtemp(prefix="nodemeter-prom-")
    port = free_port()
    config = os.path.join(data, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: nodemeter-resource
    metrics_path: /metrics/resource
    static_configs:
      - targets: ['127.0.0.1:{agent_port}']
""")
    proc = subprocess.Popen(["/usr/bin/prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}/tsdb",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port, data


def prom_query(port, query, at):
    import json
    import urllib.parse
    status, _, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?time={at:.3f}&query=" +
                               urllib.parse.quote(query))
    if status != 200:
        return None
    result = json.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def abuse(port):
    """Oversized header, malformed request line, slow drip, early disconnects, 1000 connections."""
    def raw(payload, read=True, timeout=5):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(payload)
        data = b""
        if read:
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if b"\r\n\r\n" in data and b"Connection: close" not in payload:
                        break
            except socket.timeout:
                pass
        s.close()
        return data

    big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    check(raw(big).startswith(b"HTTP/1.1 431"), "an oversized header is refused with 431")
    check(raw(b"NOT A REQUEST\r\n\r\n").startswith(b"HTTP/1.1 400"), "a malformed request line is refused with 400")
    # Early disconnects: mid-request and right after sending a request.
    raw(b"GET /metrics/resource HTTP/1.1\r\nHo", read=False)
    raw(b"GET /metrics/resource HTTP/1.1\r\nHost: x\r\n\r\n", read=False)
    # 1000 concurrent connections, each with a request in flight.
    conns = []
    for _ in range(1000):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        conns.append(s)
    answered = 0
    for s in conns:
        try:
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                answered += 1
        except OSError:
            pass
        s.close()
    check(answered == 1000, f"1000 concurrent connections all answered ({answered})")


def main():
    with Node() as node:
        web = node.pod("web-1", "default", "burstable")
        burner = web.add("burner")
        holder = web.add("holder")
        db = node.pod("db-0", "prod", "guaranteed")
        db_main = db.add("main")
        burn = burner.burn()
        holder.hold_memory(HOLD_MIB)
        db_main.run("import time; time.sleep(3600)")
        time.sleep(1.5)  # let the holder touch its pages

        with Agent("--interval=1s", "--window=3s", f"--containerd-state-dir={node.containerd}",
                   "--node-name=e2e-node") as agent:
            time.sleep(4)
            status, headers, text = agent.get("/metrics/resource")
            check(status == 200 and headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
                  "/metrics/resource answers 200 text/plain; version=0.0.4")
            first = parse_exposition(text)
            p0, w0 = proc_cpu_seconds(burn.pid), time.time()
            time.sleep(5)
            text2 = agent.get("/metrics/resource")[2]
            second = parse_exposition(text2)
            p1, t1 = proc_cpu_seconds(burn.pid), time.time()
            burner_rate = (p1 - p0) / (t1 - w0)  # what the process itself did, whatever the load
            kernel_ws = holder.working_set()
            kernel_cpu = burner.cpu_ns() / 1e9

            labels = dict(container="burner", namespace="default", pod="web-1")
            c0, ts0 = series(first, "container_cpu_usage_seconds_total", **labels) or (None, None)
            c1, ts1 = series(second, "container_cpu_usage_seconds_total", **labels) or (None, None)
            check(c0 is not None and c1 is not None, "the burner's container_cpu_usage_seconds_total is served")
            if c0 is not None and c1 is not None:
                rate = (c1 - c0) / ((ts1 - ts0) / 1000)
                check(within(rate, burner_rate, 0.15),
                      f"the burner's served CPU rate {rate:.3f} matches what it burned ({burner_rate:.3f} cores)")
                check(c1 <= kernel_cpu + 0.01 and c1 >= kernel_cpu - 3,
                      f"served CPU {c1:.3f}s matches the kernel's cpuacct.usage {kernel_cpu:.3f}s")
                check(abs(ts1 / 1000 - t1) < 3 and ts1 > ts0, "samples carry fresh millisecond timestamps")
            ws, _ = series(second, "container_memory_working_set_bytes", container="holder", pod="web-1") or (0, 0)
            check(ws >= HOLD_MIB << 20 and within(ws, kernel_ws, 0.05),
                  f"the holder's working set {ws / 2**20:.1f} MiB holds {HOLD_MIB} MiB and matches the kernel's "
                  f"{kernel_ws / 2**20:.1f} MiB")
            check(series(second, "container_start_time_seconds", container="holder", pod="web-1") is not None,
                  "container_start_time_seconds is served")
            check(series(second, "container_cpu_usage_seconds_total", container="") is None,
                  "sandbox cgroups are not containers")
            pod_cpu = series(second, "pod_cpu_usage_seconds_total", namespace="prod", pod="db-0")
            check(pod_cpu is not None and pod_cpu[0] > 0, "pod_cpu_usage_seconds_total for a Guaranteed pod")
            node_cpu = series(second, "node_cpu_usage_seconds_total")
            check(node_cpu is not None and node_cpu[0] > 0, "node_cpu_usage_seconds_total is served")
            check(series(second, "resource_scrape_error") == (0.0, None), "resource_scrape_error is 0")
            for line in ("# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the "
                         "container in core-seconds",
                         "# TYPE container_cpu_usage_seconds_total counter"):
                check(line in text2.splitlines(), f"kubelet line present: {line}")

            status, _, cadvisor = agent.get("/metrics/cadvisor")
            cad = parse_exposition(cadvisor)
            user = series(cad, "container_cpu_user_seconds_total", container="burner")
            check(status == 200 and user is not None and user[0] > 0, "/metrics/cadvisor serves user CPU")
            rss = series(cad, "container_memory_rss", container="holder")
            check(rss is not None and rss[0] >= HOLD_MIB << 20, "/metrics/cadvisor serves the holder's RSS")
            status, _, selfm = agent.get("/metrics")
            check(status == 200 and "nodemeter_collection_duration_seconds_count" in selfm
                  and "process_resident_memory_bytes" in selfm, "/metrics serves self metrics")

            promtool_check("/metrics/resource", text2)
            promtool_check("/metrics/cadvisor", cadvisor)
            promtool_check("/metrics", selfm)

            # A container removed while the agent runs leaves its series on the next pass.
            node.remove_container(holder)
            time.sleep(2.5)
            gone = parse_exposition(agent.get("/metrics/resource")[2])
            check(series(gone, "container_memory_working_set_bytes", container="holder") is None,
                  "a removed container's series disappear")
            check(series(gone, "resource_scrape_error") == (0.0, None),
                  "a container that vanished is absence, not a scrape error")

            # A slow-drip client: one byte of a request head every half second. The agent's 10 s
            # deadline for a request head must close it while everything else goes on.
            drip = socket.create_connection(("127.0.0.1", agent.port), timeout=2)
            drip.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            drip_started, drip_closed_after = time.time(), None

            def drip_once():
                nonlocal drip_closed_after
                if drip_closed_after is not None:
                    return
                try:
                    drip.sendall(b"a")
                    drip.setblocking(False)
                    try:
                        if drip.recv(1) == b"":
                            drip_closed_after = time.time() - drip_started
                    except BlockingIOError:
                        pass
                    finally:
                        drip.setblocking(True)
                except OSError:
                    drip_closed_after = time.time() - drip_started

            prom, prom_port, prom_data = run_prometheus(agent.port)
            try:
                # The burner's own CPU time, sampled while Prometheus scrapes; then rate() evaluated
                # at a moment whose whole range is surely ingested, against the same span.
                trace = []
                for _ in range(56):
                    trace.append((time.time(), proc_cpu_seconds(burn.pid)))
                    drip_once()
                    time.sleep(0.5)
                at = trace[-1][0] - 5
                start = at - 20

                def cpu_at(t):
                    return min(trace, key=lambda p: abs(p[0] - t))[1]
                # What Prometheus stored: the agent's values at the agent's timestamps. Over the
                # span those samples cover, they must match what the process burned.
                import json
                import urllib.parse
                q = urllib.parse.quote('container_cpu_usage_seconds_total{container="burner"}[20s]')
                _, _, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/query?time={at:.3f}&query={q}")
                result = json.loads(body)["data"]["result"]
                samples = [(float(t), float(v)) for t, v in result[0]["values"]] if result else []
                check(len(samples) >= 10, f"Prometheus stored the agent's samples ({len(samples)} in 20 s)")
                if len(samples) >= 2:
                    (ta, va), (tb, vb) = samples[0], samples[-1]
                    stored = (vb - va) / (tb - ta)
                    burned = (cpu_at(tb) - cpu_at(ta)) / (tb - ta)
                    check(within(stored, burned, 0.15),
                          f"Prometheus's samples give the burner {stored:.3f} cores, as it burned ({burned:.3f})")
                value = prom_query(prom_port, 'rate(container_cpu_usage_seconds_total{container="burner"}[20s])', at)
                check(value is not None and within(value, (cpu_at(at) - cpu_at(start)) / 20, 0.25),
                      f"Prometheus's rate() of the burner is {value} cores")
            finally:
                prom.terminate()
                prom.wait(10)
                shutil.rmtree(prom_data, ignore_errors=True)

            drip.close()
            check(drip_closed_after is not None and 9 <= drip_closed_after <= 15,
                  f"a slow-drip client is closed at the 10 s request-head deadline ({drip_closed_after})")
            abuse(agent.port)
            check(agent.get("/healthz")[0] == 200, "after the abuse /healthz still answers")
            rc = agent.stop()
            check(rc == 0, f"SIGTERM ends the agent with exit 0 ({rc})")
    failed = [w for ok, w in checks if not ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
