"""Pieces of a small cluster for end-to-end tests: a PKI made with the openssl CLI, and nodes made
from a fixture tree (tests/fixtures/trees/v2-systemd-containerd) with their own pod UIDs and
container ids, whose containers' CPU counters a thread advances at a known rate."""
import json
import os
import re
import shutil
import subprocess
import threading
import time

SOURCE_DIR = os.environ.get("NODEMETER_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
TREE = os.path.join(SOURCE_DIR, "tests", "fixtures", "trees", "v2-systemd-containerd")


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.strip()}")


class Pki:
    """Certificate authorities and leaf certificates in one directory (EC P-256, one day)."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def ca(self, name, cn):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={cn}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                 cwd=self.dir)
        return self.path(f"{name}.crt")

    def leaf(self, name, ca, cn, organizations=(), server_ips=(), server_dns=(), client=True):
        """A certificate signed by CA `ca`: returns (cert path, key path)."""
        subject = f"/CN={cn}" + "".join(f"/O={o}" for o in organizations)
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=self.dir)
        usages = ["clientAuth"] if client else []
        san = [f"IP:{ip}" for ip in server_ips] + [f"DNS:{d}" for d in server_dns]
        if san:
            usages.append("serverAuth")
        ext = [f"extendedKeyUsage={','.join(usages)}", "basicConstraints=CA:FALSE"]
        if san:
            ext.append("subjectAltName=" + ",".join(san))
        with open(self.path(f"{name}.ext"), "w") as f:
            f.write("\n".join(ext) + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext",
                 cwd=self.dir)
        return self.path(f"{name}.crt"), self.path(f"{name}.key")


def _renamed(hex_id, index):
    """The same id with its first two hex digits made the node's, so no two nodes share one."""
    return f"{0xa0 + index:02x}" + hex_id[2:]


class FixtureNode:
    """One node: a copy of the fixture tree with its own pod UIDs and container ids.

    pods: [{"uid", "name" (the fixture's), "namespace", "containers": [{"id", "name", "sandbox"}]}].
    """

    def __init__(self, directory, name, index, tree=TREE):
        self.name, self.dir = name, directory
        shutil.copytree(tree, directory)
        with open(os.path.join(tree, "expected.json")) as f:
            expected = json.load(f)
        replace = {}
        self.pods = []
        for p in expected["pods"]:
            uid = _renamed(p["uid"], index)
            replace[p["uid"]] = uid
            replace[p["uid"].replace("-", "_")] = uid.replace("-", "_")
            pod = {"uid": uid, "name": p["name"], "namespace": p["namespace"], "containers": []}
            for c in p["containers"]:
                cid = _renamed(c["id"], index)
                replace[c["id"]] = cid
                pod["containers"].append({"id": cid, "name": c["name"], "sandbox": c["sandbox"],
                                          "rel_path": self._apply(c["rel_path"], replace)})
            self.pods.append(pod)
        pattern = re.compile("|".join(re.escape(k) for k in sorted(replace, key=len, reverse=True)))
        self._rewrite(pattern, replace)
        self.cgroup = os.path.join(directory, "cgroup")
        self.proc = os.path.join(directory, "proc")
        self.containerd = os.path.join(directory, "containerd")

    @staticmethod
    def _apply(text, replace):
        for old, new in replace.items():
            text = text.replace(old, new)
        return text

    def _rewrite(self, pattern, replace):
        # Contents first (config.json annotations, expected.json), then names, deepest first.
        for dirpath, _, files in os.walk(self.dir):
            for f in files:
                if f.endswith(".json"):
                    p = os.path.join(dirpath, f)
                    with open(p) as fh:
                        text = fh.read()
                    with open(p, "w") as fh:
                        fh.write(pattern.sub(lambda m: replace[m.group(0)], text))
        for dirpath, dirnames, _ in os.walk(self.dir, topdown=False):
            for d in dirnames:
                new = pattern.sub(lambda m: replace[m.group(0)], d)
                if new != d:
                    os.rename(os.path.join(dirpath, d), os.path.join(dirpath, new))

    def app_containers(self):
        return [(p, c) for p in self.pods for c in p["containers"] if not c["sandbox"]]


class CpuBumper:
    """Advances usage_usec in cpu.stat of every app container of the nodes (and their roots, by
    the sum) at `cores` each, every 100 ms, writing in place so the agents' kept descriptors
    see the new values."""

    def __init__(self, nodes, cores):
        self.cores, self.files, self._stop = cores, [], threading.Event()
        for node in nodes:
            containers = node.app_containers()
            for _, c in containers:
                self.files.append((os.path.join(node.cgroup, c["rel_path"], "cpu.stat"), 1))
            self.files.append((os.path.join(node.cgroup, "cpu.stat"), len(containers)))
        self.start_usec = {path: self._usage(path) for path, _ in self.files}
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _usage(path):
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value)
        raise KeyError(f"usage_usec in {path}")

    def _write(self, path, usage):
        with open(path) as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            key, _, value = line.partition(" ")
            out.append(f"usage_usec {usage}" if key == "usage_usec" else line)
        data = ("\n".join(out) + "\n").encode()
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 0)  # never shorter than before: usage only grows
        finally:
            os.close(fd)

    def _run(self):
        while not self._stop.wait(0.1):
            elapsed = time.monotonic() - self.started
            for path, weight in self.files:
                self._write(path, self.start_usec[path] + int(elapsed * self.cores * weight * 1e6))

    def stop(self):
        self._stop.set()
        self.thread.join(2)
