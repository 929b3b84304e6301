"""Helpers for end-to-end tests: real cgroups laid out like a Kubernetes node (cgroup v1
controllers, cgroupfs driver), processes burning CPU or holding memory inside them, a containerd
state directory, and the real nodemeter binary on a free loopback port.

Everything made here is removed again by Node.cleanup() / Agent.stop(), also when a test fails:
use them as context managers. Only processes started here are ever signalled, by their PID.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

SKIP = 77
V1 = "/sys/fs/cgroup"


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def binary():
    path = os.environ.get("NODEMETER_BINARY")
    if not path or not os.access(path, os.X_OK):
        fail(f"NODEMETER_BINARY is not an executable: {path!r} (run through ctest)")
    return path


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, headers=None, timeout=10):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def parse_exposition(text):
    """{(name, frozenset(labels.items())): (value, timestamp_ms or None)}"""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)(?: (\d+))?$', line)
        if not m:
            raise ValueError(f"unparsable exposition line: {line!r}")
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), frozenset(labels.items()))] = (float(m.group(3)),
                                                         int(m.group(4)) if m.group(4) else None)
    return out


def series(parsed, name, **labels):
    for (n, ls), v in parsed.items():
        if n == name and all(dict(ls).get(k) == val for k, val in labels.items()):
            return v
    return None


def read(path):
    with open(path) as f:
        return f.read()


def stat_value(text, key):
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    raise KeyError(key)


class Container:
    def __init__(self, node, pod, name, cid, sandbox=False):
        self.node, self.pod, self.name, self.id, self.sandbox = node, pod, name, cid, sandbox
        self.rel = f"{pod.rel}/{cid}"
        self.procs = []

    def dir(self, controller):
        return f"{V1}/{controller}/{self.rel}"

    def cpu_ns(self):
        return int(read(self.dir("cpuacct") + "/cpuacct.usage"))

    def working_set(self):
        usage = int(read(self.dir("memory") + "/memory.usage_in_bytes"))
        inactive = stat_value(read(self.dir("memory") + "/memory.stat"), "total_inactive_file")
        return max(usage - inactive, 0)

    def run(self, code):
        """Starts python3 -c code inside this container's cgroups; returns the Popen."""
        r, w = os.pipe()
        # The child waits until it is in the cgroups before it does anything.
        p = subprocess.Popen([sys.executable, "-c",
                              f"import os; os.read({r}, 1); os.close({r}); " + code],
                             pass_fds=(r,))
        os.close(r)
        for c in ("cpu", "cpuacct", "memory"):
            with open(self.dir(c) + "/cgroup.procs", "w") as f:
                f.write(str(p.pid))
        os.write(w, b"x")
        os.close(w)
        self.procs.append(p)
        return p

    def burn(self):
        return self.run("import time\nwhile True: pass")

    def hold_memory(self, mib):
        # Touch every page so the memory is charged as anonymous memory now.
        return self.run(f"import time, sys\nb = bytearray(b'\\x01') * ({mib} << 20)\n"
                        "sys.stdout.write('held\\n'); sys.stdout.flush()\ntime.sleep(3600)")


class Pod:
    def __init__(self, node, name, namespace, qos):
        self.node, self.name, self.namespace, self.qos = node, name, namespace, qos
        self.uid = str(uuid.uuid4())
        parent = "kubepods" if qos == "guaranteed" else f"kubepods/{qos}"
        self.rel = f"{parent}/pod{self.uid}"
        self.containers = []

    def dir(self, controller):
        return f"{V1}/{controller}/{self.rel}"

    def add(self, name, sandbox=False):
        c = Container(self.node, self, name, uuid.uuid4().hex + uuid.uuid4().hex, sandbox)
        # As the runtimes do: config.json first, then the cgroup (an agent that scans in between
        # would otherwise meet a container without state).
        self.node.write_state(self, c)
        for ctrl in self.node.controllers:
            os.makedirs(c.dir(ctrl), exist_ok=False)
        self.containers.append(c)
        return c


class Node:
    """A node's pod cgroups under the real v1 controllers, removed again on exit."""
    controllers = ("cpu", "cpuacct", "memory")

    def __init__(self):
        if os.geteuid() != 0:
            skip("creating cgroups needs root")
        for c in self.controllers:
            if not os.path.isdir(f"{V1}/{c}"):
                skip(f"no cgroup v1 {c} controller at {V1}/{c} (this test lays out a v1 node)")
            if os.path.exists(f"{V1}/{c}/kubepods"):
                skip(f"{V1}/{c}/kubepods exists already: a real kubelet runs here")
        self.state = tempfile.mkdtemp(prefix="nodemeter-e2e-")
        self.containerd = os.path.join(self.state, "containerd")
        os.makedirs(self.containerd)
        self.pods = []
        for c in self.controllers:
            for qos in ("burstable", "besteffort"):
                os.makedirs(f"{V1}/{c}/kubepods/{qos}", exist_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def pod(self, name, namespace="default", qos="burstable"):
        p = Pod(self, name, namespace, qos)
        for c in self.controllers:
            os.makedirs(p.dir(c))
        self.pods.append(p)
        p.add("", sandbox=True)
        return p

    def write_state(self, pod, c):
        d = os.path.join(self.containerd, c.id)
        os.makedirs(d)
        ann = {
            "io.kubernetes.cri.container-type": "sandbox" if c.sandbox else "container",
            "io.kubernetes.cri.sandbox-name": pod.name,
            "io.kubernetes.cri.sandbox-namespace": pod.namespace,
            "io.kubernetes.cri.sandbox-uid": pod.uid,
        }
        if not c.sandbox:
            ann["io.kubernetes.cri.container-name"] = c.name
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"ociVersion": "1.1.0", "annotations": ann}, f)
        with open(os.path.join(d, "init.pid"), "w") as f:
            f.write(str(os.getpid()))

    def remove_container(self, c):
        for p in c.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        c.procs.clear()
        for ctrl in self.controllers:
            _rmdir_wait(c.dir(ctrl))

    def cleanup(self):
        for pod in self.pods:
            for c in pod.containers:
                for p in c.procs:
                    if p.poll() is None:
                        p.kill()
                    p.wait()
        for ctrl in self.controllers:
            root = f"{V1}/{ctrl}/kubepods"
            if not os.path.isdir(root):
                continue
            # Deepest first: cgroup directories are removed with rmdir, never recursively.
            for dirpath, dirnames, _ in sorted(os.walk(root), key=lambda t: -t[0].count("/")):
                _rmdir_wait(dirpath)
        shutil.rmtree(self.state, ignore_errors=True)


def _rmdir_wait(path):
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)  # the killed tasks leave the cgroup asynchronously
    os.rmdir(path)


class Agent:
    """The real nodemeter binary, run with the given flags on a free loopback port."""

    def __init__(self, *flags, port=None, env=None, preexec_fn=None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([binary(), "agent", f"--listen=127.0.0.1:{self.port}", *flags],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=preexec_fn)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"agent exited with {self.proc.returncode}: {self.output()}")
            try:
                if http_get(self.base + "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        fail("agent did not answer /healthz within 15 s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def get(self, path, headers=None):
        return http_get(self.base + path, headers)

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# Added for the churn soak and the fault tests (tests/e2e/churn_soak.py, faults.py).

def proc_rss_bytes(pid):
    """Resident memory of a process (VmRSS), in bytes."""
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def proc_fd_count(pid):
    """Open descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def recreate_container(node, c):
    """The container's cgroups made again under the same path: a new identity (new directory
    inodes), fresh counters, no processes yet."""
    for ctrl in node.controllers:
        os.makedirs(c.dir(ctrl), exist_ok=False)


def remove_pod(node, pod):
    """Kills every process of the pod, removes its container and pod cgroups and its runtime
    state, and forgets it."""
    for c in pod.containers:
        node.remove_container(c)
        shutil.rmtree(os.path.join(node.containerd, c.id), ignore_errors=True)
    for ctrl in node.controllers:
        _rmdir_wait(pod.dir(ctrl))
    node.pods.remove(pod)


SOURCE = os.environ.get("NODEMETER_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TREE = os.path.join(SOURCE, "tests", "fixtures", "trees", "v1-cgroupfs-containerd")
CONTROLLERS = ("cpu", "cpuacct", "memory")


class Tree:
    """A copy of the v1 fixture tree the agent is pointed at with --cgroup-root and friends."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="nodemeter-faults-")
        shutil.copytree(TREE, self.dir, dirs_exist_ok=True)
        self.expected = json.load(open(os.path.join(TREE, "expected.json")))
        self.state = os.path.join(self.dir, "containerd")

    def flags(self):
        return [f"--cgroup-root={self.dir}/cgroup", f"--proc-root={self.dir}/proc",
                f"--containerd-state-dir={self.state}", "--crio-state-dir=", "--node-name=faults-node"]

    def path(self, controller, rel, name=""):
        return os.path.join(self.dir, "cgroup", controller, rel, name)

    def containers(self):
        return [(p, c) for p in self.expected["pods"] for c in p["containers"] if not c["sandbox"]]

    def clone_pod(self, pod, name, state_dir=None):
        """A new pod like `pod` (new UID, new container ids), with its runtime state in state_dir."""
        uid = str(uuid.uuid4())
        new_rel = os.path.join(os.path.dirname(pod["rel_path"]), "pod" + uid)
        ids = {}
        for c in pod["containers"]:
            ids[c["id"]] = uuid.uuid4().hex + uuid.uuid4().hex
        for ctrl in CONTROLLERS:
            src = self.path(ctrl, pod["rel_path"])
            dst = self.path(ctrl, new_rel)
            shutil.copytree(src, dst)
            for old, new in ids.items():
                if os.path.isdir(os.path.join(dst, old)):
                    os.rename(os.path.join(dst, old), os.path.join(dst, new))
        state_dir = state_dir or self.state
        for c in pod["containers"]:
            source = next(d for d in (self.state, state_dir, self.state + ".away")
                          if os.path.isdir(os.path.join(d, c["id"])))
            with open(os.path.join(source, c["id"], "config.json")) as f:
                config = json.load(f)
            ann = config["annotations"]
            ann["io.kubernetes.cri.sandbox-uid"] = uid
            ann["io.kubernetes.cri.sandbox-name"] = name
            os.makedirs(os.path.join(state_dir, ids[c["id"]]))
            with open(os.path.join(state_dir, ids[c["id"]], "config.json"), "w") as f:
                json.dump(config, f)
        return uid, [ids[c["id"]] for c in pod["containers"] if not c["sandbox"]]

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def grow(tree, pods):
    """Adds clones of the fixture's pods until the tree holds about `pods` pods."""
    base = list(tree.expected["pods"])
    for i in range(pods - len(base)):
        tree.clone_pod(base[i % len(base)], f"clone-{i}")
