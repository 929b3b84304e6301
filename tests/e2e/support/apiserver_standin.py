"""A test-only stand-in for kube-apiserver's aggregation layer, enough for a real `kubectl top`.

It serves what kubectl reads from the API server itself (/version, discovery of the core API and of
the API groups, Nodes and Pods) and forwards every request under /apis/metrics.k8s.io to the Metrics
API backend (the agent) unchanged: method, path, query string and Accept header; the backend's status,
Content-Type and body go back as they are. Every request is recorded, with the backend's answer for
forwarded ones, so a test can assert what reached the agent.

Towards the backend it can act as kube-apiserver's aggregation layer does: connect over TLS with a
front-proxy client certificate and pass the user in X-Remote-User / X-Remote-Group / X-Remote-Extra-*
(backend_tls=BackendTls(...), remote_user=...). Towards kubectl: bound to 127.0.0.1 on a free port,
plain HTTP, no authentication. Use as a context manager.
"""
import datetime
import http.client
import http.server
import json
import os
import re
import ssl
import threading
import urllib.parse

METRICS_GROUP = "/apis/metrics.k8s.io"


def meminfo_total_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key == "MemTotal":
                return int(rest.split()[0]) * 1024
    raise KeyError("MemTotal")


def _split_requirements(selector):
    """Splits a label selector at the commas that are not inside a value set."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()], depth == 0


_SET_RE = re.compile(r"^([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^()]*)\)$")
_EQ_RE = re.compile(r"^([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)$")
_KEY_RE = re.compile(r"^(!?)\s*([A-Za-z0-9./_-]+)$")


def parse_label_selector(selector):
    """A list of predicates on a labels dict, or a ValueError saying what is wrong."""
    parts, balanced = _split_requirements(selector)
    if not balanced:
        raise ValueError(f"unbalanced parentheses in {selector!r}")
    preds = []
    for part in parts:
        m = _SET_RE.match(part)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                preds.append(lambda ls, k=key, vs=values: k in ls and ls[k] in vs)
            else:
                preds.append(lambda ls, k=key, vs=values: k not in ls or ls[k] not in vs)
            continue
        m = _EQ_RE.match(part)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                preds.append(lambda ls, k=key, v=value: ls.get(k) != v)
            else:
                preds.append(lambda ls, k=key, v=value: k in ls and ls[k] == v)
            continue
        m = _KEY_RE.match(part)
        if m:
            negate, key = m.groups()
            preds.append((lambda ls, k=key: k not in ls) if negate else (lambda ls, k=key: k in ls))
            continue
        raise ValueError(f"unable to parse requirement {part!r}")
    return preds


def parse_field_selector(selector, fields):
    """Predicates on a {field: value} dict; only the given fields are supported."""
    preds = []
    for part in [p.strip() for p in selector.split(",") if p.strip()]:
        m = re.match(r"^([A-Za-z.]+)\s*(==|!=|=)\s*(.*)$", part)
        if not m or m.group(1) not in fields:
            raise ValueError(f"field label not supported: {part!r}")
        key, op, value = m.groups()
        if op == "!=":
            preds.append(lambda fs, k=key, v=value: fs[k] != v)
        else:
            preds.append(lambda fs, k=key, v=value: fs[k] == v)
    return preds


def status(code, reason, message, details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return code, body


class BackendTls:
    """How the stand-in reaches an HTTPS backend: the front-proxy client certificate it presents
    (or none), and the CA it verifies the backend against (None: insecureSkipTLSVerify, as an
    APIService without caBundle)."""

    def __init__(self, client_cert=None, client_key=None, ca_file=None):
        self.client_cert, self.client_key, self.ca_file = client_cert, client_key, ca_file

    def context(self):
        ctx = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl._create_unverified_context()
        if self.ca_file:
            ctx.check_hostname = False  # the backend's certificate names its Service, not 127.0.0.1
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


class ApiserverStandin:
    def __init__(self, backend_port, node_name, cpu="2", memory_bytes=None, *, nodes=None,
                 backend_tls=None, remote_user=None, remote_groups=(), remote_extra=None):
        """backend_port: the Metrics API backend on 127.0.0.1; each node (node_name, or the names
        in nodes) gets cpu cores and memory_bytes (default: this machine's MemTotal) as capacity
        and allocatable. backend_tls: reach the backend over HTTPS (a BackendTls). remote_user,
        remote_groups, remote_extra ({key: [values]}): the user passed on in X-Remote-* headers
        for every forwarded request, as kube-apiserver passes the user it authenticated."""
        self.backend_port = backend_port
        self.node_name = node_name
        self.nodes = list(nodes) if nodes else [node_name]
        self.backend_tls = backend_tls
        self.remote_user = remote_user
        self.remote_groups = list(remote_groups)
        self.remote_extra = dict(remote_extra or {})
        self.cpu = cpu
        self.memory_bytes = memory_bytes if memory_bytes is not None else meminfo_total_bytes()
        self.created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.pods = []  # dicts: name, namespace, uid, labels
        self.requests = []
        self._lock = threading.Lock()
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                standin._handle(self)

            do_HEAD = do_GET
            do_POST = do_GET
            do_PUT = do_GET
            do_DELETE = do_GET
            do_PATCH = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def add_pod(self, name, namespace, uid, labels=None, node=None):
        self.pods.append({"name": name, "namespace": namespace, "uid": uid, "labels": dict(labels or {}),
                          "node": node or self.nodes[0]})

    def write_kubeconfig(self, directory, namespace="default"):
        path = os.path.join(directory, "kubeconfig")
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {}}],
            "contexts": [{"name": "standin",
                          "context": {"cluster": "standin", "user": "standin", "namespace": namespace}}],
            "current-context": "standin",
        }
        with open(path, "w") as f:
            json.dump(config, f)  # YAML is a superset of JSON
        return path

    def recorded(self, path_prefix=""):
        with self._lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix)]

    # --- request handling -------------------------------------------------------------------

    def _handle(self, h):
        url = urllib.parse.urlsplit(h.path)
        path, query = url.path, url.query
        record = {"method": h.command, "path": path, "query": query,
                  "params": urllib.parse.parse_qs(query, keep_blank_values=True),
                  "accept": h.headers.get("Accept", ""), "user_agent": h.headers.get("User-Agent", "")}
        length = int(h.headers.get("Content-Length") or 0)
        request_body = h.rfile.read(length) if length else None
        if path == METRICS_GROUP or path.startswith(METRICS_GROUP + "/"):
            code, content_type, body = self._forward(h, request_body)
            record["forwarded"] = True
        else:
            code, obj = self._serve(h.command, path, record["params"])
            content_type, body = "application/json", json.dumps(obj).encode()
            record["forwarded"] = False
        record.update(status=code, content_type=content_type, body=body.decode(errors="replace"))
        with self._lock:
            self.requests.append(record)
        h.send_response(code)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _forward(self, h, request_body):
        if self.backend_tls:
            conn = http.client.HTTPSConnection("127.0.0.1", self.backend_port, timeout=10,
                                               context=self.backend_tls.context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.backend_port, timeout=10)
        try:
            headers = {}
            for name in ("Accept", "User-Agent", "Content-Type"):
                if h.headers.get(name) is not None:
                    headers[name] = h.headers.get(name)
            if self.remote_user is not None:
                headers["X-Remote-User"] = self.remote_user
                for key, values in self.remote_extra.items():
                    headers["X-Remote-Extra-" + urllib.parse.quote(key, safe="")] = ",".join(values)
            conn.putrequest(h.command, h.path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            if self.remote_user is not None:
                for group in self.remote_groups:  # one header per group, as kube-apiserver sends
                    conn.putheader("X-Remote-Group", group)
            conn.putheader("Content-Length", str(len(request_body or b"")))
            conn.endheaders(request_body)
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type", ""), r.read()
        except OSError as e:
            code, obj = status(503, "ServiceUnavailable", f"the metrics backend is unreachable: {e}")
            return code, "application/json", json.dumps(obj).encode()
        finally:
            conn.close()

    def _serve(self, method, path, params):
        if method not in ("GET", "HEAD"):
            return status(405, "MethodNotAllowed", f"the server does not allow this method on {path}")
        if path == "/version":
            return 200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-nodemeter-standin",
                         "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                         "buildDate": self.created, "goVersion": "go1.23.0", "compiler": "gc",
                         "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                         "serverAddress": f"127.0.0.1:{self.port}"}]}
        if path == "/apis":
            versions = [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"},
                        {"groupVersion": "metrics.k8s.io/v1", "version": "v1"}]
            return 200, {"kind": "APIGroupList", "apiVersion": "v1",
                         "groups": [{"name": "metrics.k8s.io", "versions": versions,
                                     "preferredVersion": versions[0]}]}
        if path == "/api/v1":
            def res(name, kind, namespaced):
                return {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                        "verbs": ["get", "list"]}
            return 200, {"kind": "APIResourceList", "groupVersion": "v1",
                         "resources": [res("namespaces", "Namespace", False), res("nodes", "Node", False),
                                       res("pods", "Pod", True)]}
        parts = [p for p in path.split("/") if p]
        if parts[:2] != ["api", "v1"]:
            return status(404, "NotFound", "the server could not find the requested resource")
        rest = parts[2:]
        if rest == ["nodes"]:
            return self._list("NodeList", [self._node(n) for n in self.nodes], params, lambda n: n,
                              ("metadata.name",))
        if len(rest) == 2 and rest[0] == "nodes":
            if rest[1] not in self.nodes:
                return status(404, "NotFound", f'nodes "{rest[1]}" not found', {"name": rest[1], "kind": "nodes"})
            return 200, self._node(rest[1])
        if rest == ["pods"]:
            return self._list("PodList", self.pods, params, self._pod, ("metadata.name", "metadata.namespace"))
        if len(rest) == 3 and rest[0] == "namespaces" and rest[2] == "pods":
            pods = [p for p in self.pods if p["namespace"] == rest[1]]
            return self._list("PodList", pods, params, self._pod, ("metadata.name", "metadata.namespace"))
        if len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "pods":
            for p in self.pods:
                if p["namespace"] == rest[1] and p["name"] == rest[3]:
                    return 200, self._pod(p)
            return status(404, "NotFound", f'pods "{rest[3]}" not found', {"name": rest[3], "kind": "pods"})
        return status(404, "NotFound", "the server could not find the requested resource")

    def _list(self, kind, items, params, render, fields):
        try:
            label_preds = parse_label_selector(params.get("labelSelector", [""])[0])
            field_preds = parse_field_selector(params.get("fieldSelector", [""])[0], fields)
        except ValueError as e:
            return status(400, "BadRequest", str(e))
        out = []
        for item in items:
            obj = render(item)
            meta = obj["metadata"]
            field_values = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", "")}
            if all(p(meta.get("labels", {})) for p in label_preds) and all(p(field_values) for p in field_preds):
                out.append(obj)
        return 200, {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": out}

    def _node(self, name):
        resources = {"cpu": self.cpu, "memory": f"{self.memory_bytes // 1024}Ki", "pods": "110"}
        uid = "00000000-0000-0000-0000-%012d" % (self.nodes.index(name) + 1)
        return {"kind": "Node", "apiVersion": "v1",
                "metadata": {"name": name, "uid": uid, "creationTimestamp": self.created,
                             "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
                "spec": {},
                "status": {"capacity": resources, "allocatable": resources,
                           "conditions": [{"type": "Ready", "status": "True"}],
                           "nodeInfo": {"kubeletVersion": "v1.32.0", "operatingSystem": "linux",
                                        "architecture": "amd64"}}}

    def _pod(self, p):
        return {"kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": p["name"], "namespace": p["namespace"], "uid": p["uid"],
                             "creationTimestamp": self.created, "labels": p["labels"]},
                "spec": {"nodeName": p["node"]},
                "status": {"phase": "Running"}}
