"""`nodemeter bench --create` on real cgroups: it prints the table and the JSON for 50 synthetic
containers with 2 burners, runs a command while they exist, and removes every cgroup it made and
every burner it started, also when SIGINT or SIGTERM cuts it short."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from e2e import binary, fail, skip  # noqa: E402

CGROUP = "/sys/fs/cgroup"
checks = []


def check(ok, what):
    checks.append((ok, what))
    print(("ok   " if ok else "FAIL ") + what, flush=True)


def parent_dirs(pid):
    """Every directory a bench with this PID made under the hierarchies (v1 controllers or v2)."""
    name = f"nodemeter-bench-{pid}"
    return sorted(glob.glob(f"{CGROUP}/{name}") + glob.glob(f"{CGROUP}/*/{name}"))


def tasks_under(dirs):
    pids = set()
    for d in dirs:
        for root, _, files in os.walk(d):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(root, "cgroup.procs")) as f:
                        pids.update(int(x) for x in f.read().split())
                except OSError:
                    pass
    return pids


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def run(*args, timeout=60):
    p = subprocess.Popen([binary(), "bench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        fail(f"nodemeter bench {' '.join(args)} did not finish in {timeout} s: {err[-400:]}")
    return p.pid, p.returncode, out, err


def gone_after(pid, what):
    left = parent_dirs(pid)
    check(not left, f"{what}: every cgroup it made is removed ({left[:3]})")


def interrupt(sig, create, wait_for_burners):
    """Starts a long bench, signals it mid-run, and checks that it cleaned up after itself."""
    p = subprocess.Popen([binary(), "bench", "--create", str(create), "--burners", "2", "--duration", "20s"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    burners = set()
    deadline = time.time() + 20
    while time.time() < deadline and p.poll() is None:
        dirs = parent_dirs(p.pid)
        if dirs and not wait_for_burners:
            break
        burners = tasks_under(dirs) - {p.pid}  # the bench visits each container briefly itself
        if len(burners) >= 2:
            time.sleep(0.5)  # well into the measurements
            break
        time.sleep(0.01)
    if p.poll() is not None:
        fail(f"bench ended before it could be interrupted: {p.communicate()[1][-400:]}")
    made = parent_dirs(p.pid)
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        fail(f"bench did not end within 20 s of {sig.name}")
    name = sig.name
    check(p.returncode == 128 + sig.value, f"{name} mid-run exits {128 + sig.value} (got {p.returncode})")
    check("interrupted" in err, f"{name}: it says it was interrupted ({err.strip()[-200:]!r})")
    check(bool(made), f"{name}: it had made its cgroups before the signal ({made})")
    gone_after(p.pid, name)
    if wait_for_burners:
        check(len(burners) == 2, f"{name}: two burners ran in the synthetic cgroups ({sorted(burners)})")
    still = [b for b in burners if alive(b)]
    check(not still, f"{name}: no burner process remains ({still})")


def main():
    if os.geteuid() != 0:
        skip("nodemeter bench --create makes cgroups, which needs root")
    v2 = os.path.exists(f"{CGROUP}/cgroup.controllers")
    if not v2 and not all(os.path.isdir(f"{CGROUP}/{c}") for c in ("cpuacct", "memory")):
        skip(f"no cgroup v1 cpuacct and memory controllers and no cgroup v2 at {CGROUP}")

    # The table.
    pid, rc, out, err = run("--create", "50", "--burners", "2", "--iterations", "300", "--passes", "5")
    check(rc == 0, f"--create 50 --burners 2 exits 0 ({err.strip()[-300:]!r})")
    print(out)
    check(f"synthetic node nodemeter-bench-{pid}: 50 containers in 25 pods, 2 burners" in out,
          "the table names the synthetic node")
    header = [line for line in out.splitlines() if line.startswith("FILE")]
    check(len(header) == 1 and all(w in header[0] for w in ("METHOD", "CGROUPS", "READS", "P50", "P90", "P99", "MAX")),
          "the table has its header")
    kinds = ("cpu.stat", "memory.current", "memory.stat") if v2 else ("cpuacct.usage", "cpuacct.stat", "memory.stat")
    for kind in kinds:
        rows = [line for line in out.splitlines() if line.startswith(kind + " ")]
        check(len(rows) == 3 and all(len(r) == len(header[0]) for r in rows),
              f"{kind}: three aligned rows, one per read method")
    check("collection pass over 25 pods + 50 containers (75 cgroups; median of 5 passes)" in out,
          "the pass covers the 25 pods and 50 containers")
    check("pass / pread floor: " in out, "the pass is held against the pread floor")
    gone_after(pid, "table run")

    # The JSON.
    pid, rc, out, err = run("--create", "50", "--burners", "2", "--iterations", "200", "--passes", "3", "--json")
    check(rc == 0, f"--json exits 0 ({err.strip()[-300:]!r})")
    try:
        j = json.loads(out)
    except ValueError as e:
        fail(f"--json printed no JSON ({e}): {out[:300]!r}")
    check(j["created"] == {"containers": 50, "pods": 25, "burners": 2, "parent": f"nodemeter-bench-{pid}"},
          f"created: {j['created']}")
    # parent, kubepods, burstable, besteffort, 25 pods, 50 containers.
    check(j["cgroups"] == 79, f"every synthetic cgroup is measured ({j['cgroups']} of 79)")
    check(j["scope"] == "all" and j["interrupted"] is False, "scope all, not interrupted")
    for f in j["files"]:
        if f["file"] in kinds:
            ok = f["reads"] == 200 and f["errors"] == 0 and 0 < f["p50_ns"] <= f["p90_ns"] <= f["p99_ns"] <= f["max_ns"]
            check(ok, f"{f['file']} {f['method']}: 200 reads, ordered percentiles ({f})")
    p = j["pass"]
    check(p["pods"] == 25 and p["containers"] == 50 and p["passes"] == 3, f"pass over 25 pods, 50 containers ({p})")
    check(p["ratio"] is not None and p["ratio"] > 0 and p["floor_median_ns"]["pread"] > 0,
          "the pass has a pread floor and a ratio")
    gone_after(pid, "JSON run")

    # A command run while the cgroups exist sees them and the burners.
    pid, rc, out, err = run("--create", "6", "--burners", "2", "--iterations", "0", "--passes", "0", "--",
                            "sh", "-c", 'for p in $NODEMETER_BENCH_BURNER_PIDS; do grep -c "nodemeter-bench-" '
                                        '/proc/$p/cgroup; done; ls "$NODEMETER_BENCH_CGROUP_ROOT"')
    check(rc == 0, f"-- COMMAND exits 0 ({err.strip()[-300:]!r})")
    counts = [int(x) for x in out.splitlines() if x.isdigit()]
    check(len(counts) == 2 and all(c >= 1 for c in counts),
          f"the command sees both burners inside the synthetic cgroups ({counts})")
    check(("cpuacct" in out and "memory" in out) or v2,
          "NODEMETER_BENCH_CGROUP_ROOT holds the controllers as a --cgroup-root does")
    gone_after(pid, "-- COMMAND run")

    interrupt(signal.SIGINT, 50, wait_for_burners=True)
    interrupt(signal.SIGTERM, 400, wait_for_burners=False)

    failed = [what for ok, what in checks if not ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
