"""deploy/systemd/nodemeter.service and nodemeter.socket, checked five ways (this machine has no
systemd PID 1; the fifth brings one up):

1. The units as written: parsed here, each setting the issue asks for asserted (Type=notify,
   WatchdogSec, DynamicUser, ProtectSystem=strict, NoNewPrivileges, read-only cgroupfs, ...), the
   memory limit against bench/RESULTS.md, the socket's address against the agent's default.
2. systemd's own tools on them: `systemd-analyze verify` (clean on copies naming the built binary,
   and shown to complain about deliberately broken copies), `systemd-analyze security --offline`
   (exposure at most 2.0, and a copy with the hardening stripped scoring worse), and every system
   call the agent makes (strace) allowed by the unit's SystemCallFilter= as systemd expands it.
3. The agent run the way the unit runs it, in a private mount namespace: / and /sys read-only,
   every cgroup mount read-only (ProtectControlGroups=), /proc with hidepid=invisible
   (ProtectProc=), a user id no account has and no capabilities (DynamicUser=,
   CapabilityBoundingSet=), no_new_privs, the unit's ExecStart unchanged, started on the first
   connection by systemd-socket-activate (the listening socket handed over as nodemeter.socket
   does), sd_notify datagrams on a NOTIFY_SOCKET with the sender's credentials (NotifyAccess=main),
   WATCHDOG=1 often enough for WatchdogSec=, STOPPING=1 and exit 0 on SIGTERM. Where the test can
   lay out a pod cgroup: runtime state that only root can read (as containerd leaves it) gives
   names from the cgroup path, and the README's CAP_DAC_READ_SEARCH override gives the real names.
4. The journal: a real systemd-journald started in that namespace (its sockets and storage on
   tmpfs), the agent's stderr connected to journald's stdout stream as systemd connects it, with
   $JOURNAL_STREAM naming it; the entries read back with journalctl carry MESSAGE, PRIORITY, the
   agent's NODEMETER_* fields and the dynamic user's _UID. Without a matching $JOURNAL_STREAM the
   same agent writes logfmt text lines instead.
5. A real systemd as PID 1 of its own pid, mount, cgroup and uts namespaces (in cgroups of its own,
   with a minimal unit set and the two units as written, the socket moved to a free port by a
   drop-in): `systemctl enable --now nodemeter.socket`, the first connection starts the service,
   READY/STATUS/watchdog accepted, the agent's real sandbox (dynamic uid, no capabilities, seccomp,
   read-only / and cgroupfs), `journalctl -u nodemeter`, a frozen agent killed by the watchdog and
   restarted, `systemctl stop` clean. Left out (with a note) where PID 1 is already systemd.
"""
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from e2e import SKIP, binary, fail, free_port, http_get, parse_exposition, series  # noqa: E402

SOURCE = os.environ.get("NODEMETER_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
UNITS = os.path.join(SOURCE, "deploy", "systemd")
SERVICE = os.path.join(UNITS, "nodemeter.service")
SOCKET = os.path.join(UNITS, "nodemeter.socket")
INSTALLED_BINARY = "/usr/local/bin/nodemeter"
SANITIZED = os.environ.get("NODEMETER_SANITIZED") == "1"
TOOLS = {"systemd-analyze": "systemd", "systemd-socket-activate": "systemd", "journalctl": "systemd",
         "/lib/systemd/systemd-journald": "systemd", "strace": "strace", "setpriv": "util-linux",
         "unshare": "util-linux", "mount": "mount"}

checks = []


def check(ok, what):
    checks.append((ok, what))
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    return ok


def finish():
    failed = [w for ok, w in checks if not ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed", flush=True)
    sys.exit(1 if failed else 0)


# --- unit files ---------------------------------------------------------------------------------

def parse_unit(path):
    """{section: [(key, value)]} in file order; comments, blank lines and continuations handled."""
    sections, current, pending = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if pending:
                line, pending = pending + line.lstrip(), ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            stripped = line.strip()
            if not stripped or stripped[0] in "#;":
                continue
            if stripped.startswith("[") and stripped.endswith("]"):
                current = sections.setdefault(stripped[1:-1], [])
                continue
            key, _, value = stripped.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def get(unit, section, key):
    """The effective value of a single-valued setting (the last assignment), or None."""
    values = [v for k, v in unit.get(section, []) if k == key]
    return values[-1] if values else None


def get_list(unit, section, key):
    """A list setting as systemd accumulates it: an empty assignment resets it."""
    out = []
    for k, v in unit.get(section, []):
        if k == key:
            out = [] if v == "" else out + v.split()
    return out


def truthy(value):
    return value is not None and value.lower() in ("1", "yes", "true", "on")


def seconds(span):
    """A systemd time span ("30s", "1min 30s", "500ms", "30") in seconds; None if unparsable."""
    units = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "": 1,
             "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total, matched = 0.0, ""
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span or ""):
        if unit not in units:
            return None
        total += float(number) * units[unit]
        matched += number + unit
    return total if matched and matched == re.sub(r"\s", "", span) else None


def mebibytes(size):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", size or "")
    if not m:
        return None
    return float(m.group(1)) * {"": 2**-20, "K": 2**-10, "M": 1, "G": 2**10, "T": 2**20}[m.group(2)]


def agent_help_default(flag):
    """The default the agent's --help prints for --flag."""
    out = subprocess.run([binary(), "agent", "--help"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if re.search(rf"--{flag}\b", line):
            m = re.search(r"\(default ([^)]+)\)$", line.strip())
            if m:
                return m.group(1)
    return None


def exec_start(service):
    return shlex.split(get(service, "Service", "ExecStart") or "")


def flag_value(argv, flag):
    for i, a in enumerate(argv):
        if a.startswith(f"--{flag}="):
            return a.split("=", 1)[1]
        if a == f"--{flag}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def bench_memory_mib():
    """(peak resident, kernel memory of kept descriptors) at 1000 containers, from bench/RESULTS.md."""
    text = open(os.path.join(SOURCE, "bench", "RESULTS.md")).read()
    peak = re.search(r"VmRSS / VmHWM after wrk \| [\d.]+ / ([\d.]+) MiB", text)
    kernel = re.search(r"\(([\d.]+) MiB charged to the memory cgroup\)", text)
    if not peak or not kernel:
        return None
    return float(peak.group(1)), float(kernel.group(1))


def static_checks(service, sock):
    s = lambda key: get(service, "Service", key)  # noqa: E731
    check(s("Type") == "notify", f"Type=notify ({s('Type')})")
    check(s("NotifyAccess") == "main", f"NotifyAccess=main ({s('NotifyAccess')})")
    watchdog = seconds(s("WatchdogSec"))
    check(watchdog is not None and watchdog > 0, f"WatchdogSec= set ({s('WatchdogSec')})")
    check(s("Restart") == "on-failure", f"Restart=on-failure ({s('Restart')})")
    argv = exec_start(service)
    check(argv[:2] == [INSTALLED_BINARY, "agent"], f"ExecStart runs {INSTALLED_BINARY} agent ({argv})")
    check(flag_value(argv, "listen") is None,
          "ExecStart gives no --listen (the socket unit's sockets replace the default; an explicit one "
          "would be served besides them and collide with the socket unit's address)")
    interval = seconds(flag_value(argv, "interval") or agent_help_default("interval"))
    check(interval is not None and watchdog is not None and interval <= watchdog / 2,
          f"the agent's pass interval ({interval} s) is at most half of WatchdogSec ({watchdog} s)")
    for key, want in [("DynamicUser", "yes"), ("NoNewPrivileges", "yes"), ("ProtectHome", "yes"),
                      ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"),
                      ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
                      ("ProtectControlGroups", "yes"), ("LockPersonality", "yes"),
                      ("RestrictRealtime", "yes"), ("RestrictNamespaces", "yes"),
                      ("RestrictSUIDSGID", "yes"), ("MemoryDenyWriteExecute", "yes")]:
        check(truthy(s(key)), f"{key}={want} ({s(key)})")
    check(s("ProtectSystem") == "strict", f"ProtectSystem=strict ({s('ProtectSystem')})")
    check("/sys/fs/cgroup" in get_list(service, "Service", "ReadOnlyPaths"),
          "ReadOnlyPaths= includes /sys/fs/cgroup")
    check(s("CapabilityBoundingSet") == "" and s("AmbientCapabilities") in ("", None),
          "CapabilityBoundingSet= empty: no capabilities at all")
    families = set(get_list(service, "Service", "RestrictAddressFamilies"))
    check(families == {"AF_INET", "AF_INET6", "AF_UNIX"},
          f"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX ({sorted(families)})")
    filters = [v for k, v in service["Service"] if k == "SystemCallFilter"]
    check(filters[:1] == ["@system-service"], f"SystemCallFilter=@system-service ({filters})")
    check(s("ProtectProc") == "invisible" and s("ProcSubset") in (None, "all"),
          "ProtectProc=invisible, and no ProcSubset=pid (the agent reads /proc/stat, /proc/meminfo)")
    memory_max = mebibytes(s("MemoryMax"))
    figures = bench_memory_mib()
    if check(figures is not None, f"bench/RESULTS.md gives the peak resident and kernel memory {figures}"):
        need = figures[0] + figures[1]
        check(memory_max is not None and memory_max >= need,
              f"MemoryMax={s('MemoryMax')} covers the benchmark's peak at 1000 containers "
              f"({figures[0]} MiB resident + {figures[1]} MiB kernel = {need:.1f} MiB)")
    nofile = int(s("LimitNOFILE") or 0)
    check(nofile >= 16384, f"LimitNOFILE={nofile}: kept cgroup descriptors and connections fit")

    k = lambda key: get(sock, "Socket", key)  # noqa: E731
    default_listen = agent_help_default("listen")
    streams = get_list(sock, "Socket", "ListenStream")
    check(streams == [default_listen],
          f"ListenStream={streams} is the agent's default address ({default_listen})")
    check(not truthy(k("Accept")), "Accept=no: the agent is handed the listening socket itself")
    check(k("Service") in (None, "nodemeter.service"), "the socket activates nodemeter.service")
    check(get(sock, "Install", "WantedBy") == "sockets.target", "nodemeter.socket is wanted by sockets.target")
    check(get(service, "Install", "WantedBy") == "multi-user.target",
          "nodemeter.service is wanted by multi-user.target")


# --- systemd-analyze ----------------------------------------------------------------------------

def unit_copy(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def verify(*paths):
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *paths], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def analyze_checks(tmp):
    service_text = open(SERVICE).read().replace(INSTALLED_BINARY, binary())
    socket_text = open(SOCKET).read()
    good = os.path.join(tmp, "good")
    os.mkdir(good)
    svc = unit_copy(good, "nodemeter.service", service_text)
    sck = unit_copy(good, "nodemeter.socket", socket_text)
    rc, out = verify(svc, sck)
    check(rc == 0 and out == "", f"systemd-analyze verify accepts both units, silently (rc {rc}: {out[:300]})")

    # The same verifier on broken copies: it must complain, or the clean run above proves nothing.
    bad = os.path.join(tmp, "bad")
    os.mkdir(bad)
    typo = unit_copy(bad, "typo.service", service_text.replace("Type=notify", "Type=notfy")
                     .replace("WatchdogSec=", "WatchdogSec=often"))
    rc, out = verify(typo)
    check("Failed to parse service type" in out and "Failed to parse sec value" in out,
          f"verify reports a misspelt Type= and WatchdogSec= ({out[:200]!r})")
    missing = unit_copy(bad, "missing.service", service_text.replace(binary(), "/nonexistent/nodemeter"))
    rc, out = verify(missing)
    check(rc != 0 and "/nonexistent/nodemeter" in out, f"verify fails on a missing ExecStart binary (rc {rc})")
    badsock = unit_copy(bad, "nodemeter.socket", socket_text.replace("127.0.0.1:10261", "127.0.0.1:notaport"))
    unit_copy(bad, "nodemeter.service", service_text)
    rc, out = verify(badsock)
    check("ListenStream" in out or rc != 0, f"verify reports a bad ListenStream= ({out[:200]!r})")

    # Exposure as systemd scores it; the same unit without its hardening must score worse.
    def exposure(path):
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", path],
                           capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
        return (float(m.group(1)) if m else None), r.returncode
    level, rc = exposure(svc)
    check(level is not None and level <= 2.0 and rc == 0,
          f"systemd-analyze security: exposure {level} (at most 2.0 on its 0-10 scale)")
    hardening = ("Protect", "Private", "Restrict", "NoNewPrivileges", "Capability", "SystemCall",
                 "DynamicUser", "LockPersonality", "MemoryDeny", "ReadOnlyPaths", "RemoveIPC", "UMask")
    stripped = "".join(l for l in service_text.splitlines(keepends=True) if not l.startswith(hardening))
    bare = unit_copy(bad, "bare.service", stripped)
    bare_level, bare_rc = exposure(bare)
    check(bare_level is not None and bare_level > 5 and bare_rc != 0,
          f"without its hardening the unit scores {bare_level} and fails the same threshold")


def syscall_groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())
    return groups


def expand(names, groups, seen=None):
    seen = seen or set()
    out = set()
    for n in names:
        if n.startswith("@"):
            if n not in seen:
                seen.add(n)
                out |= expand(groups.get(n, ()), groups, seen)
        else:
            out.add(n)
    return out


def allowed_syscalls(service):
    """SystemCallFilter= as systemd applies it: the allow lists, minus the ~deny lists, plus @default."""
    groups = syscall_groups()
    allow, deny = set(), set()
    for k, v in service["Service"]:
        if k != "SystemCallFilter" or not v:
            continue
        if v.startswith("~"):
            deny |= expand(v[1:].split(), groups)
        else:
            allow |= expand(v.split(), groups)
    return (allow - deny) | expand(["@default"], groups)


# --- the agent as the unit runs it (inside a private mount namespace) ---------------------------

class Notifications:
    """A NOTIFY_SOCKET as systemd keeps one: datagrams with the sender's credentials."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages = []  # (time, pid, uid, text)

    def poll(self, seconds, until=None):
        end = time.time() + seconds
        while time.time() < end:
            self.sock.settimeout(max(0.01, min(0.2, end - time.time())))
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            pid = uid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, uid, _ = struct.unpack("iii", payload[:12])
            for text in data.decode().split("\n"):
                if text:
                    self.messages.append((time.time(), pid, uid, text))
            if until and until(self.messages):
                return True
        return bool(until and until(self.messages))

    def texts(self):
        return [m[3] for m in self.messages]


def journal_stream(identifier):
    """A connection to journald's stdout socket, set up as systemd sets one up for a service."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("/run/systemd/journal/stdout")
    # identifier, unit, priority, level prefix, forward to syslog, kmsg, console
    s.sendall(f"{identifier}\n\n6\n0\n0\n0\n0\n".encode())
    st = os.fstat(s.fileno())
    return s, f"{st.st_dev}:{st.st_ino}"


def journal_entries(match):
    r = subprocess.run(["journalctl", "--directory=/run/log/journal", "-o", "json", "--no-pager"],
                       capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if all(e.get(k) == v for k, v in match.items()):
            out.append(e)
    return out


def wait_journal(match, count, seconds=5):
    end = time.time() + seconds
    while True:
        found = journal_entries(match)
        if len(found) >= count or time.time() > end:
            return found
        time.sleep(0.1)


def private_view():
    """What the unit's sandbox does to the file system, in this (private) mount namespace."""
    mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
    subprocess.run(["mount", "-o", "remount,bind,ro", "/"], check=True)  # ProtectSystem=strict
    subprocess.run(["mount", "-o", "remount,bind,ro", "/sys"], check=True)  # ProtectKernelTunables=
    for mp in mounts:  # ProtectControlGroups=, ReadOnlyPaths=/sys/fs/cgroup
        if mp == "/sys/fs/cgroup" or mp.startswith("/sys/fs/cgroup/"):
            subprocess.run(["mount", "-o", "remount,bind,ro", mp], check=True)
    subprocess.run(["mount", "-t", "proc", "-o", "hidepid=invisible", "proc", "/proc"], check=True)
    # journald's sockets and storage, and the runtime state directories, on tmpfs of our own.
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/etc/systemd"], check=True)
    if os.path.isdir("/var/log/journal"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/var/log/journal"], check=True)
    with open("/etc/systemd/journald.conf", "w") as f:
        f.write("[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToKMsg=no\n"
                "ForwardToConsole=no\nForwardToWall=no\n")


def sandboxed(uid, caps=()):
    """setpriv as the unit's DynamicUser=, CapabilityBoundingSet=, NoNewPrivileges= set the agent up;
    caps: the README's override (ambient capabilities kept)."""
    if not caps:
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
                "--bounding-set=-all", "--inh-caps=-all"]
    plus = ",".join("+" + c for c in caps)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
            f"--bounding-set=-all,{plus}", f"--inh-caps=-all,{plus}", f"--ambient-caps=-all,{plus}"]


def status_fields(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        fields[k] = v.split()
    return fields


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def inner(args):
    """Runs in `unshare --mount`: everything mounted here vanishes with the namespace."""
    service = parse_unit(SERVICE)
    uid = args["uid"]
    pod = args.get("pod")
    private_view()
    if pod:
        # containerd's layout: the task directory traversable (0711), each bundle root-only (0700).
        task = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
        os.makedirs(task)
        for d in ("/run/containerd", "/run/containerd/io.containerd.runtime.v2.task", task):
            os.chmod(d, 0o711)
        subprocess.run(["mount", "--bind", pod["state"], task], check=True)
    check(subprocess.run(["sh", "-c", "mkdir /sys/fs/cgroup/memory/nodemeter-rw-probe"],
                         capture_output=True).returncode != 0,
          "in the sandboxed view cgroupfs is read-only (mkdir refused)")

    journald = subprocess.Popen(["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    procs = [journald]
    try:
        deadline = time.time() + 10
        while not os.path.exists("/run/systemd/journal/stdout") and time.time() < deadline:
            time.sleep(0.05)
        if not check(os.path.exists("/run/systemd/journal/socket"),
                     "systemd-journald runs in the private namespace (its sockets are there)"):
            return
        os.makedirs("/run/nodemeter-test", mode=0o755)
        notify = Notifications("/run/nodemeter-test/notify")
        stream, stream_id = journal_stream("nodemeter")

        # --- A: the unit's ExecStart, socket-activated, as a dynamic user, logging to the journal.
        argv = exec_start(service)
        argv[0] = binary()
        port = free_port()
        activate = ["systemd-socket-activate", f"--listen=127.0.0.1:{port}",
                    "--setenv=NOTIFY_SOCKET=/run/nodemeter-test/notify",
                    f"--setenv=JOURNAL_STREAM={stream_id}", *sandboxed(uid), *argv]
        agent = subprocess.Popen(activate, stdin=subprocess.DEVNULL, stdout=stream.fileno(),
                                 stderr=stream.fileno())
        procs.append(agent)
        time.sleep(1)
        started_early = notify.poll(0.5, until=lambda m: bool(m))
        with open(f"/proc/{agent.pid}/cmdline", "rb") as f:
            still_waiting = b"systemd-socket-activate" in f.read()
        check(not started_early and still_waiting,
              "socket activation: nothing runs the agent before the first connection")
        t0 = time.time()
        status, _, body = http_get(f"http://127.0.0.1:{port}/healthz", timeout=20)
        check(status == 200 and body == "ok",
              f"the first connection starts the agent and is answered ({status} after {time.time() - t0:.2f} s)")
        notify.poll(10, until=lambda m: any(x[3] == "READY=1" for x in m))
        check("READY=1" in notify.texts(), "READY=1 on the NOTIFY_SOCKET")
        check(any(t.startswith("STATUS=tracking ") for t in notify.texts()),
              f"STATUS= says what it tracks ({[t for t in notify.texts() if t.startswith('STATUS=')][:1]})")
        senders = {(m[1], m[2]) for m in notify.messages}
        check(senders == {(agent.pid, uid)},
              f"every notification comes from the main PID {agent.pid} as uid {uid} "
              f"(NotifyAccess=main; seen {sorted(senders, key=str)})")
        st = status_fields(agent.pid)
        check(st["Uid"][:3] == [str(uid)] * 3 and st["Gid"][:3] == [str(uid)] * 3,
              f"the agent runs as the dynamic user {uid} (Uid {st['Uid']})")
        check(int(st["CapEff"][0], 16) == 0 and int(st["CapBnd"][0], 16) == 0 and st["NoNewPrivs"] == ["1"],
              f"no capabilities, empty bounding set, no_new_privs (CapEff {st['CapEff']}, "
              f"CapBnd {st['CapBnd']}, NoNewPrivs {st['NoNewPrivs']})")

        # Watchdog: the unit's own interval, against the unit's own WatchdogSec=.
        watchdog = seconds(get(service, "Service", "WatchdogSec"))
        interval = seconds(flag_value(argv, "interval") or agent_help_default("interval"))
        notify.poll(2.5 * interval + 1.5,
                    until=lambda m: sum(1 for x in m if x[3] == "WATCHDOG=1") >= 4)
        pings = [m[0] for m in notify.messages if m[3] == "WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        check(len(pings) >= 3 and max(gaps) <= watchdog / 2,
              f"WATCHDOG=1 every pass: {len(pings)} pings, gaps {[round(g, 2) for g in gaps]} s, "
              f"at most half of WatchdogSec={watchdog:g}s")
        check(all(abs(g - interval) < 1.0 for g in gaps), f"the pings follow the {interval:g} s pass interval")

        status, _, body = http_get(f"http://127.0.0.1:{port}/metrics/resource")
        parsed = parse_exposition(body) if status == 200 else {}
        cpu = series(parsed, "node_cpu_usage_seconds_total")
        mem = series(parsed, "node_memory_working_set_bytes")
        check(cpu is not None and cpu[0] > 0 and mem is not None and mem[0] > 0,
              f"as the dynamic user on read-only cgroupfs it serves node figures (cpu {cpu}, memory {mem})")
        if pod:
            by_uid = series(parsed, "pod_memory_working_set_bytes", pod=pod["uid"])
            by_name = series(parsed, "pod_memory_working_set_bytes", pod=pod["name"])
            pods = sorted({dict(labels).get("pod") for (n, labels) in parsed if n.startswith("pod_")})
            check(by_uid is not None and by_name is None,
                  f"runtime state only root can read: the pod is named from its cgroup path, its uid ({pods})")
        status, _, _ = http_get(f"http://127.0.0.1:{port}/metrics/cadvisor")
        check(status == 200, f"/metrics/cadvisor answers ({status})")

        os.kill(agent.pid, signal.SIGTERM)  # what `systemctl stop` sends first
        notify.poll(6, until=lambda m: any(x[3] == "STOPPING=1" for x in m))
        check("STOPPING=1" in notify.texts(), "STOPPING=1 on SIGTERM")
        code = stop(agent)
        check(code == 0, f"the agent exits 0 on SIGTERM (no Restart=on-failure; exit {code})")

        match = {"_PID": str(agent.pid)}
        entries = wait_journal(match, 3)
        serving = [e for e in entries if e.get("MESSAGE") == "serving"]
        e = serving[0] if serving else {}
        check(bool(serving) and e.get("_TRANSPORT") == "journal" and e.get("PRIORITY") == "6",
              f"journal: MESSAGE=serving, PRIORITY=6 over the native protocol "
              f"({ {k: e.get(k) for k in ('MESSAGE', 'PRIORITY', '_TRANSPORT')} })")
        check(e.get("NODEMETER_LISTEN") == f"127.0.0.1:{port}" and e.get("NODEMETER_INTERVAL") == f"{interval:g}s"
              and e.get("NODEMETER_CGROUP_ROOT") == "/sys/fs/cgroup" and bool(e.get("NODEMETER_CGROUP_MODE"))
              and bool(e.get("NODEMETER_NODE")),
              f"journal: the agent's fields ({ {k: v for k, v in e.items() if k.startswith('NODEMETER_')} })")
        check(e.get("_UID") == str(uid), f"journal: _UID is the dynamic user ({e.get('_UID')})")
        shutting = [x for x in entries if x.get("MESSAGE") == "shutting down"]
        check(bool(shutting) and shutting[0].get("NODEMETER_SIGNAL") == "SIGTERM" and
              any(x.get("MESSAGE") == "stopped" for x in entries),
              "journal: 'shutting down' with NODEMETER_SIGNAL=SIGTERM, then 'stopped'")
        if pod:
            warned = [x for x in entries if x.get("PRIORITY") == "4" and
                      x.get("MESSAGE", "").startswith("pod identity: cannot read /run/containerd/")]
            check(bool(warned), "journal: the unreadable runtime state is a warning, PRIORITY=4 "
                  f"({warned[0]['MESSAGE'] if warned else [x.get('MESSAGE') for x in entries]})")
        # (systemd-socket-activate's own lines share the stream and, as it execs the agent, the PID)
        text_lines = [x for x in entries if x.get("_TRANSPORT") == "stdout" and "msg=" in x.get("MESSAGE", "")]
        check(not text_lines, f"journal: no logfmt text lines from the agent "
              f"({[x.get('MESSAGE', '')[:80] for x in text_lines]})")
        stream.close()

        # --- B: the same stderr, but $JOURNAL_STREAM does not name it: logfmt text on stderr.
        stream_b, stream_id_b = journal_stream("nodemeter-text")
        port_b = free_port()
        env = dict(os.environ, JOURNAL_STREAM="0:" + stream_id_b.split(":")[1])
        env.pop("NOTIFY_SOCKET", None)
        text_agent = subprocess.Popen([binary(), "agent", f"--listen=127.0.0.1:{port_b}", "--interval=200ms",
                                       "--window=1s"], env=env, stdin=subprocess.DEVNULL,
                                      stdout=stream_b.fileno(), stderr=stream_b.fileno(),
                                      preexec_fn=die_with_parent)
        procs.append(text_agent)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if http_get(f"http://127.0.0.1:{port_b}/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        stop(text_agent)
        lines = wait_journal({"SYSLOG_IDENTIFIER": "nodemeter-text"}, 3)
        serving_b = [x for x in lines if 'msg="serving"' in x.get("MESSAGE", "")]
        check(bool(serving_b) and serving_b[0].get("_TRANSPORT") == "stdout" and
              serving_b[0]["MESSAGE"].startswith("ts=") and f"listen=127.0.0.1:{port_b}" in serving_b[0]["MESSAGE"]
              and not any(k.startswith("NODEMETER_") for k in serving_b[0]),
              f"a $JOURNAL_STREAM naming another stream: logfmt lines on stderr "
              f"({serving_b[0]['MESSAGE'][:90] if serving_b else lines[:1]})")
        check(not wait_journal({"_PID": str(text_agent.pid), "_TRANSPORT": "journal"}, 1, 0.5),
              "... and nothing over the native protocol")
        stream_b.close()

        # --- C: the README's override for runtime names: the dynamic user with CAP_DAC_READ_SEARCH.
        if pod:
            port_c = free_port()
            c = subprocess.Popen([*sandboxed(uid, ["dac_read_search"]), binary(), "agent",
                                  f"--listen=127.0.0.1:{port_c}", "--interval=200ms", "--window=1s"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(c)
            named, parsed = None, {}
            deadline = time.time() + 10
            while time.time() < deadline and named is None:
                try:
                    status, _, body = http_get(f"http://127.0.0.1:{port_c}/metrics/resource", timeout=1)
                    if status == 200:
                        parsed = parse_exposition(body)
                        named = series(parsed, "pod_memory_working_set_bytes", pod=pod["name"],
                                       namespace=pod["namespace"])
                except OSError:
                    pass
                time.sleep(0.2)
            st = status_fields(c.pid) if c.poll() is None else {"CapEff": ["?"]}
            pods = sorted({str(dict(labels).get("namespace")) + "/" + str(dict(labels).get("pod"))
                           for (n, labels) in parsed if n.startswith("pod_")})
            check(named is not None and st["CapEff"] == ["0000000000000004"],
                  f"with AmbientCapabilities=CAP_DAC_READ_SEARCH the dynamic user reads containerd's "
                  f"state: pod {pod['namespace']}/{pod['name']} (CapEff {st['CapEff']}; pods {pods})")
            stop(c)

        # --- D: every system call the agent makes, journal and notify paths included.
        allowed = allowed_syscalls(service)
        port_d = free_port()
        stream_d, stream_id_d = journal_stream("nodemeter-strace")
        trace = "/run/nodemeter-test/strace"
        env = dict(os.environ, JOURNAL_STREAM=stream_id_d, NOTIFY_SOCKET="/run/nodemeter-test/notify")
        traced = subprocess.Popen(["strace", "-f", "-qq", "-o", trace, binary(), "agent",
                                   f"--listen=127.0.0.1:{port_d}", "--interval=200ms", "--window=1s"],
                                  env=env, stdin=subprocess.DEVNULL, stdout=stream_d.fileno(),
                                  stderr=stream_d.fileno(), preexec_fn=die_with_parent)
        procs.append(traced)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if http_get(f"http://127.0.0.1:{port_d}/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        for path in ("/metrics/resource", "/metrics/cadvisor", "/metrics", "/readyz", "/livez", "/nope"):
            http_get(f"http://127.0.0.1:{port_d}{path}")
        time.sleep(1)
        # SIGTERM to the agent itself (strace would detach from it on its own SIGTERM).
        with open(f"/proc/{traced.pid}/task/{traced.pid}/children") as f:
            for child in f.read().split():
                os.kill(int(child), signal.SIGTERM)
        traced.wait(20)
        stream_d.close()
        used = set()
        with open(trace) as f:
            for line in f:
                m = re.match(r"^\d+\s+([a-z0-9_]+)\(", line)
                if m:
                    used.add(m.group(1))
        denied = sorted(used - allowed)
        check(len(used) > 20 and not denied,
              f"SystemCallFilter= allows all {len(used)} system calls the agent makes"
              + (f"; denied: {denied}" if denied else ""))
    finally:
        for p in reversed(procs):
            stop(p)


# --- under a real systemd PID 1 (in its own pid, mount, cgroup and uts namespaces) --------------

MINIMAL_TARGETS = ("sysinit", "basic", "shutdown", "sockets", "multi-user", "local-fs", "network",
                   "paths", "timers", "slices")


def cgroup_mounts():
    """(mount point, fs type, mount options) of this host's cgroup file systems."""
    out = []
    for line in open("/proc/self/mountinfo"):
        pre, _, post = line.partition(" - ")
        mp = pre.split()[4]
        fstype, _, superopts = post.split()[:3]
        if fstype in ("cgroup", "cgroup2") and (mp == "/sys/fs/cgroup" or mp.startswith("/sys/fs/cgroup/")):
            opts = ",".join(o for o in superopts.split(",") if o not in ("rw", "ro"))
            out.append((mp, fstype, opts))
    return out


class Pid1:
    """systemd as PID 1 of fresh namespaces, in cgroups of its own, with a minimal unit set: the
    repository's two units as written (plus a drop-in moving the socket to a free port), journald,
    empty targets. Generators are hidden so nothing of the host's /etc/fstab is touched."""

    def __init__(self, tmp, port):
        self.tmp, self.port = tmp, port
        self.cgroup = f"nodemeter-pid1-{os.getpid()}"
        self.mounts = cgroup_mounts()
        lib = os.path.join(tmp, "lib-units")
        etc = os.path.join(tmp, "etc-systemd")
        self.etc_units = os.path.join(etc, "system")
        bindir = os.path.join(tmp, "bin")
        for d in (lib, self.etc_units, bindir, os.path.join(tmp, "empty")):
            os.makedirs(d)
        for name in ("systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket"):
            shutil.copy(os.path.join("/usr/lib/systemd/system", name), lib)
        for t in MINIMAL_TARGETS:
            unit_copy(lib, f"{t}.target", f"[Unit]\nDescription={t}\n")
        unit_copy(lib, "system.slice", "[Unit]\nDescription=system\n")
        unit_copy(lib, "test.target", "[Unit]\nDescription=test\nWants=systemd-journald.service\n")
        os.symlink("test.target", os.path.join(lib, "default.target"))
        shutil.copy(SERVICE, self.etc_units)
        shutil.copy(SOCKET, self.etc_units)
        os.makedirs(os.path.join(self.etc_units, "nodemeter.socket.d"))
        unit_copy(os.path.join(self.etc_units, "nodemeter.socket.d"), "test-port.conf",
                  f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
        if SANITIZED:
            # LeakSanitizer stops the world with ptrace at exit, which the unit's SystemCallFilter
            # refuses ("LeakSanitizer has encountered a fatal error"): the exit would fail for
            # that alone. Every other agent run of the suite checks for leaks.
            os.makedirs(os.path.join(self.etc_units, "nodemeter.service.d"))
            unit_copy(os.path.join(self.etc_units, "nodemeter.service.d"), "test-sanitizer.conf",
                      "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n")
        unit_copy(etc, "journald.conf", "[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\n"
                  "ForwardToConsole=no\nForwardToWall=no\n")
        shutil.copy(binary(), os.path.join(bindir, "nodemeter"))
        os.chmod(bindir, 0o755)
        os.chmod(os.path.join(bindir, "nodemeter"), 0o755)

        lines = ["set -e", "mount -t proc proc /proc"]
        if not any(mp == "/sys/fs/cgroup" for mp, _, _ in self.mounts):
            lines.append("mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup")
        for mp, fstype, opts in self.mounts:  # mounted afresh: rooted at this cgroup namespace
            lines += [f"mkdir -p {mp}", f"mount -t {fstype} -o {opts or 'defaults'} {fstype} {mp}"]
        lines += ["mount -t tmpfs -o mode=755 tmpfs /run",
                  f"mount --bind {lib} /usr/lib/systemd/system",
                  f"mount --bind {tmp}/empty /usr/lib/systemd/system-generators",
                  f"mount --bind {etc} /etc/systemd",
                  f"mount --bind {bindir} /usr/local/bin",
                  # PrivateTmp= directories, and anything else, in this namespace's own /tmp
                  "mount -t tmpfs -o mode=1777 tmpfs /tmp",
                  "mount -t tmpfs -o mode=1777 tmpfs /var/tmp",
                  "export container=nodemeter-test",
                  "exec /lib/systemd/systemd --system --log-target=journal --log-level=info </dev/null"]
        script = unit_copy(tmp, "pid1.sh", "\n".join(lines) + "\n")

        self.dirs = []
        for mp, _, _ in self.mounts:
            d = os.path.join(mp, self.cgroup)
            os.mkdir(d)
            self.dirs.append(d)
            if os.path.exists(os.path.join(mp, "cpuset.cpus")) and os.path.exists(os.path.join(d, "cpuset.cpus")):
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(d, f), "w") as out:
                        out.write(open(os.path.join(mp, f)).read())

        def enter_cgroups():
            for d in self.dirs:
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write("0")

        self.setup_log = open(os.path.join(tmp, "setup.log"), "w")
        def enter_cgroups_and_die_with_us():
            enter_cgroups()
            die_with_parent()

        # --kill-child: PID 1 (and so the namespace) ends with unshare, which ends with this test.
        self.unshare = subprocess.Popen(["unshare", "--cgroup", "--pid", "--fork", "--kill-child", "--mount",
                                         "--uts", "--propagation", "private", "bash", script],
                                        preexec_fn=enter_cgroups_and_die_with_us, stdin=subprocess.DEVNULL,
                                        stdout=self.setup_log, stderr=subprocess.STDOUT)
        self.pid = None
        deadline = time.time() + 10
        while self.pid is None and time.time() < deadline and self.unshare.poll() is None:
            try:
                children = open(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children").read().split()
                self.pid = int(children[0]) if children else None
            except OSError:
                pass
            time.sleep(0.05)

    def run(self, *cmd):
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-u", *cmd], capture_output=True,
                           text=True, timeout=60)
        return r.stdout.strip()

    def show(self, unit, *props):
        out = self.run("systemctl", "show", unit, "--no-pager", *[f"--property={p}" for p in props])
        return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)

    def wait(self, predicate, seconds):
        end = time.time() + seconds
        while time.time() < end:
            if predicate():
                return True
            time.sleep(0.2)
        return predicate()

    def log_tail(self):
        text = ""
        for path in (os.path.join(self.tmp, "setup.log"),):
            try:
                text += open(path).read()[-400:]
            except OSError:
                pass
        return text

    def close(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)  # PID 1 of the namespace: everything in it ends
            except ProcessLookupError:
                pass
        try:
            self.unshare.wait(20)
        except subprocess.TimeoutExpired:
            self.unshare.kill()
            self.unshare.wait()
        for top in self.dirs:  # deepest first: cgroups are removed with rmdir
            for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
                for _ in range(100):
                    try:
                        os.rmdir(dirpath)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)


def under_systemd(tmp):
    try:
        first = open("/proc/1/comm").read().strip()
    except OSError:
        first = "?"
    if first == "systemd":
        print("note: PID 1 here is systemd: install the units on it to run them; the PID 1 part is left out")
        return
    for mp, _, _ in cgroup_mounts():  # what an earlier run killed outright left: empty cgroups
        for name in os.listdir(mp):
            m = re.fullmatch(r"nodemeter-pid1-(\d+)", name)
            if m and not os.path.exists(f"/proc/{m.group(1)}"):
                for dirpath, _, _ in sorted(os.walk(os.path.join(mp, name)), key=lambda t: -t[0].count("/")):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass
    port = free_port()
    pid1 = Pid1(tmp, port)
    try:
        up = pid1.pid is not None and pid1.wait(
            lambda: pid1.run("systemctl", "is-system-running") in ("running", "degraded"), 20)
        enabled = up and pid1.run("systemctl", "enable", "--now", "nodemeter.socket") is not None
        up = enabled and pid1.run("systemctl", "is-active", "nodemeter.socket") == "active"
        if not check(up, f"systemd {systemd_version()} runs as PID 1 of its own namespaces; `systemctl enable "
                     f"--now nodemeter.socket` ({pid1.log_tail() if not up else 'listening on 127.0.0.1:%d' % port})"):
            return
        check(pid1.run("systemctl", "is-active", "nodemeter.service") == "inactive",
              "PID 1: nodemeter.service is not started before the first connection")
        status, _, body = http_get(f"http://127.0.0.1:{port}/healthz", timeout=20)
        svc = pid1.show("nodemeter.service", "ActiveState", "SubState", "StatusText", "MainPID", "WatchdogUSec",
                        "WatchdogTimestampMonotonic", "TriggeredBy")
        check(status == 200 and body == "ok" and svc.get("ActiveState") == "active" and
              svc.get("TriggeredBy") == "nodemeter.socket",
              f"PID 1: the first connection starts nodemeter.service through nodemeter.socket ({status}, {svc})")
        unit_watchdog = seconds(get(parse_unit(SERVICE), "Service", "WatchdogSec"))
        check(svc.get("StatusText", "").startswith("tracking ") and seconds(svc.get("WatchdogUSec")) == unit_watchdog,
              f"PID 1: Type=notify accepted READY=1 and STATUS= ({svc.get('StatusText')!r}, watchdog "
              f"{svc.get('WatchdogUSec')})")
        main = svc.get("MainPID")
        st = {}
        for line in pid1.run("cat", f"/proc/{main}/status").splitlines():
            k, _, v = line.partition(":")
            st[k] = v.split()
        uid = int(st.get("Uid", ["-1"])[0])
        check(61184 <= uid <= 65519 and st.get("CapEff") == ["0000000000000000"] and
              st.get("CapBnd") == ["0000000000000000"] and st.get("NoNewPrivs") == ["1"] and
              st.get("Seccomp") == ["2"],
              f"PID 1: the agent runs as dynamic user {uid}, no capabilities, no_new_privs, a seccomp "
              f"filter ({ {k: st.get(k) for k in ('CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp')} })")
        visible = {}  # mount point -> options of the topmost mount there (the last one listed)
        for v in (l.split() for l in pid1.run("cat", f"/proc/{main}/mountinfo").splitlines()):
            visible[v[4]] = v[5].split(",")
        cg = {mp: o for mp, o in visible.items() if mp == "/sys/fs/cgroup" or mp.startswith("/sys/fs/cgroup/")}
        writable = sorted(mp for mp, o in cg.items() if "ro" not in o)
        check(cg and not writable and "ro" in visible.get("/", []),
              f"PID 1: the agent sees / and all {len(cg)} cgroup mounts read-only (writable: {writable})")
        status, _, body = http_get(f"http://127.0.0.1:{port}/metrics/resource")
        parsed = parse_exposition(body) if status == 200 else {}
        cpu, mem = series(parsed, "node_cpu_usage_seconds_total"), series(parsed, "node_memory_working_set_bytes")
        check(cpu is not None and cpu[0] > 0 and mem is not None and mem[0] > 0,
              f"PID 1: inside the sandbox it serves node figures (cpu {cpu}, memory {mem})")
        entries = [json.loads(l) for l in pid1.run("journalctl", "-u", "nodemeter", "-o", "json",
                                                   "--no-pager").splitlines() if l.startswith("{")]
        serving = [e for e in entries if e.get("MESSAGE") == "serving"]
        e = serving[0] if serving else {}
        check(e.get("_TRANSPORT") == "journal" and e.get("PRIORITY") == "6" and
              e.get("NODEMETER_LISTEN") == f"127.0.0.1:{port}" and e.get("_UID") == str(uid),
              f"PID 1: journalctl -u nodemeter has the structured 'serving' entry, the socket's address "
              f"in NODEMETER_LISTEN ({ {k: e.get(k) for k in ('PRIORITY', '_TRANSPORT', 'NODEMETER_LISTEN', '_UID')} })")
        before = int(svc.get("WatchdogTimestampMonotonic") or 0)
        fed = pid1.wait(lambda: int(pid1.show("nodemeter.service", "WatchdogTimestampMonotonic")
                                    .get("WatchdogTimestampMonotonic") or 0) > before, 8)
        check(fed, "PID 1: the watchdog is fed (WatchdogTimestamp advances)")

        # A stuck agent: a short watchdog for the test's sake, the agent frozen with SIGSTOP.
        dropin = os.path.join(pid1.etc_units, "nodemeter.service.d")
        os.makedirs(dropin, exist_ok=True)
        unit_copy(dropin, "test-watchdog.conf", "[Service]\nWatchdogSec=3s\nTimeoutAbortSec=2s\nLimitCORE=0\n"
                  "ExecStart=\nExecStart=/usr/local/bin/nodemeter agent --interval=1s --window=2s\n")
        pid1.run("systemctl", "daemon-reload")
        pid1.run("systemctl", "restart", "nodemeter.service")
        time.sleep(4)
        fast = pid1.show("nodemeter.service", "MainPID", "NRestarts", "ActiveState")
        check(fast.get("ActiveState") == "active" and fast.get("NRestarts") == "0",
              f"PID 1: a 1 s interval keeps a 3 s watchdog fed ({fast})")
        pid1.run("systemctl", "kill", "--signal=SIGSTOP", "nodemeter.service")

        def restarted():
            now = pid1.show("nodemeter.service", "MainPID", "NRestarts", "ActiveState")
            return (now.get("NRestarts") == "1" and now.get("ActiveState") == "active" and
                    now.get("MainPID") not in ("0", fast.get("MainPID")))
        again = pid1.wait(restarted, 20)
        timeouts = [x for x in pid1.run("journalctl", "-u", "nodemeter.service", "-o", "cat", "--no-pager")
                    .splitlines() if "Watchdog timeout" in x]
        check(again and bool(timeouts), "PID 1: a frozen agent misses the watchdog, is killed and restarted "
              f"(Restart=on-failure; {timeouts[:1]})")
        os.remove(os.path.join(dropin, "test-watchdog.conf"))
        pid1.run("systemctl", "daemon-reload")

        pid1.run("systemctl", "stop", "nodemeter.service")
        stopped = pid1.show("nodemeter.service", "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
        clean = (stopped.get("ActiveState") == "inactive" and stopped.get("Result") == "success" and
                 stopped.get("ExecMainStatus") == "0")
        last = [] if clean else pid1.run("journalctl", "-u", "nodemeter.service", "-o", "cat", "-n", "15",
                                         "--no-pager").splitlines()
        journal = f"; journal: {' | '.join(last)}" if last else ""
        check(clean, f"PID 1: systemctl stop ends it cleanly, exit 0 ({stopped}{journal})")
        check(pid1.run("systemctl", "is-active", "nodemeter.socket") == "active",
              "PID 1: nodemeter.socket keeps listening after the service stops")
    finally:
        pid1.close()


def systemd_version():
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True).stdout.split()
    return out[1] if len(out) > 1 else "?"


def die_with_parent():
    """In a child before exec: SIGKILL when this test's process ends, however it ends."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_dynamic_uid():
    """A uid in systemd's DynamicUser= range that no account and no process has."""
    used = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                for line in open(f"/proc/{d}/status"):
                    if line.startswith("Uid:"):
                        used.update(int(x) for x in line.split()[1:])
            except OSError:
                pass
    for uid in range(61184, 65520):
        if uid in used:
            continue
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    fail("no free uid in 61184-65519")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--inner":
        inner(json.loads(sys.argv[2]))
        finish()

    for tool, package in TOOLS.items():
        if not (shutil.which(tool) or os.access(tool, os.X_OK)):
            fail(f"{tool} is missing (Debian package {package}; scripts/deps.sh test installs it)")
    if os.geteuid() != 0:
        print("SKIP: running the agent as the unit does (mount namespace, setpriv) needs root")
        sys.exit(SKIP)

    service, sock = parse_unit(SERVICE), parse_unit(SOCKET)
    static_checks(service, sock)
    tmp = tempfile.mkdtemp(prefix="nodemeter-units-")
    node = None
    try:
        analyze_checks(tmp)
        args = {"uid": free_dynamic_uid()}
        try:
            from e2e import Node
            node = Node()
        except SystemExit as e:  # Node() skips where it cannot lay out pod cgroups
            if e.code != SKIP:
                raise
            print("note: no pod cgroups laid out: the runtime-name checks are left out")
        if node:
            pod = node.pod("web", "shop")
            pod.add("app").hold_memory(8)  # a running container: a process, its CPU time, its memory
            os.chmod(node.containerd, 0o711)
            for d in os.listdir(node.containerd):
                os.chmod(os.path.join(node.containerd, d), 0o700)
            args["pod"] = {"uid": pod.uid, "name": pod.name, "namespace": pod.namespace,
                           "state": node.containerd}
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                            os.path.abspath(__file__), "--inner", json.dumps(args)], timeout=300,
                           preexec_fn=die_with_parent)
        check(r.returncode == 0, "the sandboxed run (above) passed" if r.returncode == 0
              else f"the sandboxed run failed (exit {r.returncode})")
        under_systemd(tmp)
    finally:
        if node:
            node.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
