"""A test-only stand-in for kube-apiserver: the parts nodemeter uses, in the real JSON shapes.

Serves /version; pods list (paged with limit/continue, field and label selectors) and watch
(chunked JSON lines: ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) for all namespaces or one;
TokenReview and SubjectAccessReview (tokens and a policy the test sets, every review recorded);
the kube-system/extension-apiserver-authentication ConfigMap. Every API request needs
`Authorization: Bearer <token>` with a configured token, or a client certificate signed by
--client-ca (its CN is the user); anything else is a 401 Status.

Faults for the clients under test: drop the open watches, answer 410 Gone (as an HTTP status or
as a watch ERROR event), expire all resource versions (compaction), fail the next N requests
with a status, delay answers, close connections without answering.

Use it as a library (FakeApiServer(...).start(), then its methods) or as a process:
  python3 fake_apiserver.py --port-file F [--tls-cert C --tls-key K] [--client-ca CA]
                            [--token TOKEN=USER[:GROUP,GROUP...]]...
which prints the port and writes it to F once listening. Either way the control API under
/_fake/ (no authentication) changes pods, faults, tokens, policy and the ConfigMap:
  POST /_fake/pods            a Pod object: added, or modified when its namespace/name exists
  POST /_fake/pods/delete     {"namespace": ..., "name": ...} or {"uid": ...}
  POST /_fake/faults          {"fail_next": N, "fail_status": 500, "delay": seconds,
                               "refuse_next": N, "gone_next": N, "gone_mode": "status"|"event",
                               "drop_watches": true, "expire": true, "bookmark_interval": s}
  POST /_fake/tokens          {"<token>": {"username": ..., "uid": ..., "groups": [...]}}
  POST /_fake/policy          {"rules": [{"user"|"group": ..., "verb": ..., "resource": ...,
                               "subresource": ..., "path": ...}]}  ("*" matches anything)
  POST /_fake/configmap       the ConfigMap's data (strings), or null for 404
  GET  /_fake/reviews         {"tokenreviews": [...], "subjectaccessreviews": [...]}
  GET  /_fake/stats           request counters, open watches, resource version
"""
import argparse
import base64
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def status_object(code, reason, message):
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse_selector(text, kind):
    """'a=b,c!=d' -> [(key, op, value)]; equality-based selectors only, as the tests need."""
    terms = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "==" in part:
            key, value = part.split("==", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif "=" in part:
            key, value = part.split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif kind == "label":
            terms.append((part, "exists", None))
        else:
            raise ValueError("invalid field selector term %r" % part)
    return terms


FIELDS = {
    "spec.nodeName": lambda p: p.get("spec", {}).get("nodeName", ""),
    "metadata.name": lambda p: p.get("metadata", {}).get("name", ""),
    "metadata.namespace": lambda p: p.get("metadata", {}).get("namespace", ""),
    "status.phase": lambda p: p.get("status", {}).get("phase", ""),
}


def matches(pod, namespace, labels, fields):
    meta = pod.get("metadata", {})
    if namespace and meta.get("namespace") != namespace:
        return False
    pod_labels = meta.get("labels") or {}
    for key, op, value in labels:
        if op == "exists":
            if key not in pod_labels:
                return False
        elif op == "=" and pod_labels.get(key) != value:
            return False
        elif op == "!=" and pod_labels.get(key) == value:
            return False
    for key, op, value in fields:
        actual = FIELDS[key](pod)
        if (op == "=" and actual != value) or (op == "!=" and actual == value):
            return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients under test fail TLS handshakes and drop connections on purpose.
        if os.environ.get("FAKE_APISERVER_VERBOSE"):
            super().handle_error(request, client_address)


class FakeApiServer:
    def __init__(self, tls_cert=None, tls_key=None, client_ca=None, tokens=None, host="127.0.0.1"):
        self.cond = threading.Condition()
        self.rv = 100
        self.compacted_rv = 0  # watches and continue tokens older than this get 410
        self.pods = {}  # (namespace, name) -> pod
        self.history = []  # (rv, type, pod) for watches
        self.tokens = dict(tokens or {})
        self.rules = []
        self.token_reviews = []
        self.access_reviews = []
        self.configmap = None
        self.faults = {
            "fail_next": 0,
            "fail_status": 500,
            "delay": 0.0,
            "refuse_next": 0,
            "gone_next": 0,
            "gone_mode": "event",
            "bookmark_interval": 1.0,
        }
        self.stats = {"requests": 0, "lists": 0, "watches": 0, "failed": 0, "refused": 0,
                      "gone": 0, "unauthorized": 0}
        self.watch_sockets = set()
        self.watch_generation = 0  # bumped to end every open watch
        self.stopping = False
        self.httpd = _Server((host, 0), _handler_for(self))
        self.tls = None
        if tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert, tls_key)
            if client_ca:
                context.load_verify_locations(client_ca)
                context.verify_mode = ssl.CERT_OPTIONAL
            self.tls = context
        self.port = self.httpd.server_address[1]
        self.thread = None

    # Lifecycle.
    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.drop_watches()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self):
        return ("https" if self.tls else "http") + "://127.0.0.1:%d" % self.port

    # Pods.
    def _record(self, kind, pod):
        self.rv += 1
        pod.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, kind, json.loads(json.dumps(pod))))
        self.cond.notify_all()

    def put_pod(self, pod):
        """Adds a pod (ADDED) or replaces the one with its namespace and name (MODIFIED)."""
        pod = json.loads(json.dumps(pod))
        meta = pod.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (meta["namespace"], meta["name"])
        with self.cond:
            old = self.pods.get(key)
            if old is None:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now_rfc3339())
            else:
                meta["uid"] = old["metadata"]["uid"]
                meta.setdefault("creationTimestamp", old["metadata"].get("creationTimestamp"))
            self.pods[key] = pod
            self._record("ADDED" if old is None else "MODIFIED", pod)
            return pod

    def delete_pod(self, namespace=None, name=None, uid=None):
        with self.cond:
            for key, pod in list(self.pods.items()):
                meta = pod["metadata"]
                if (uid and meta.get("uid") == uid) or (key == (namespace, name)):
                    del self.pods[key]
                    self._record("DELETED", pod)
                    return True
        return False

    # Faults.
    def set_faults(self, **faults):
        with self.cond:
            for key in ("drop_watches", "expire"):
                faults.pop(key, None) and getattr(self, key)()
            unknown = set(faults) - set(self.faults)
            if unknown:
                raise ValueError("unknown faults %s" % sorted(unknown))
            self.faults.update(faults)

    def drop_watches(self):
        """Closes every open watch connection without ending its chunked body."""
        with self.cond:
            self.watch_generation += 1
            sockets = list(self.watch_sockets)
            self.cond.notify_all()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def expire(self):
        """Compaction: every resource version up to now is too old to watch from."""
        with self.cond:
            self.rv += 1
            self.compacted_rv = self.rv
            self.history = [h for h in self.history if h[0] > self.compacted_rv]
        self.drop_watches()

    def _take(self, name):
        with self.cond:
            if self.faults[name] > 0:
                self.faults[name] -= 1
                return True
        return False

    # Authentication and authorization.
    def set_tokens(self, tokens):
        with self.cond:
            self.tokens.update(tokens)

    def set_policy(self, rules):
        with self.cond:
            self.rules = list(rules)

    def set_configmap(self, data):
        """The extension-apiserver-authentication ConfigMap's data; None answers 404."""
        with self.cond:
            self.configmap = data

    def reviews(self):
        with self.cond:
            return {"tokenreviews": list(self.token_reviews),
                    "subjectaccessreviews": list(self.access_reviews)}

    def allowed(self, spec):
        user = spec.get("user", "")
        groups = spec.get("groups") or []
        res = spec.get("resourceAttributes")
        non = spec.get("nonResourceAttributes")
        attrs = res or non or {}
        for rule in self.rules:
            if "user" in rule and rule["user"] not in ("*", user):
                continue
            if "group" in rule and rule["group"] != "*" and rule["group"] not in groups:
                continue
            if rule.get("verb", "*") not in ("*", attrs.get("verb", "")):
                continue
            if res is not None:
                if "path" in rule:
                    continue
                if rule.get("resource", "*") not in ("*", res.get("resource", "")):
                    continue
                if rule.get("subresource", "*") not in ("*", res.get("subresource", "")):
                    continue
            else:
                if "resource" in rule or rule.get("path", "*") not in ("*", attrs.get("path")):
                    continue
            return True
        return False


def _handler_for(server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60

        def setup(self):
            if server.tls is not None:
                self.request = server.tls.wrap_socket(self.request, server_side=True)
            super().setup()

        def log_message(self, fmt, *args):
            if os.environ.get("FAKE_APISERVER_VERBOSE"):
                sys.stderr.write("fake-apiserver: " + fmt % args + "\n")

        # Responses.
        def send_json(self, code, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def send_status(self, code, reason, message):
            self.send_json(code, status_object(code, reason, message))

        def read_body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def read_json(self):
            body = self.read_body()
            return json.loads(body) if body else None

        # Dispatch.
        def do_GET(self):
            self.dispatch("GET")

        def do_POST(self):
            self.dispatch("POST")

        def do_DELETE(self):
            self.dispatch("DELETE")

        def dispatch(self, method):
            url = urllib.parse.urlsplit(self.path)
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            path = url.path
            try:
                if path.startswith("/_fake/"):
                    return self.control(method, path, query)
                with server.cond:
                    server.stats["requests"] += 1
                body = self.read_body() if method == "POST" else b""
                if server._take("refuse_next"):
                    with server.cond:
                        server.stats["refused"] += 1
                    self.close_connection = True
                    self.request.shutdown(socket.SHUT_RDWR)
                    return
                delay = server.faults["delay"]
                if delay:
                    time.sleep(delay)
                user = self.authenticate()
                if user is None:
                    with server.cond:
                        server.stats["unauthorized"] += 1
                    return self.send_status(401, "Unauthorized", "Unauthorized")
                if server._take("fail_next"):
                    with server.cond:
                        server.stats["failed"] += 1
                    code = server.faults["fail_status"]
                    return self.send_status(code, "InternalError",
                                            "an error on the server (fault injected)")
                self.api(method, path, query, body)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                self.close_connection = True
            except ValueError as e:
                self.send_status(400, "BadRequest", str(e))

        def authenticate(self):
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                token = auth[len("Bearer "):].strip()
                with server.cond:
                    return server.tokens.get(token)
            if server.tls is not None:
                cert = self.request.getpeercert()
                if cert:
                    subject = dict(x[0] for x in cert.get("subject", ()))
                    return {"username": subject.get("commonName", ""), "groups": []}
            return None

        def api(self, method, path, query, body):
            parts = path.strip("/").split("/")
            if method == "GET" and path == "/version":
                return self.send_json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake",
                                            "platform": "linux/amd64"})
            if method == "GET" and parts[:2] == ["api", "v1"] and parts[-1] == "pods" and (
                    len(parts) == 3 or (len(parts) == 5 and parts[2] == "namespaces")):
                namespace = parts[3] if len(parts) == 5 else ""
                if query.get("watch") in ("true", "1"):
                    return self.watch(namespace, query)
                return self.list(namespace, query)
            if (method == "GET" and path ==
                    "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"):
                with server.cond:
                    data = server.configmap
                if data is None:
                    return self.send_status(404, "NotFound", 'configmaps '
                                            '"extension-apiserver-authentication" not found')
                return self.send_json(200, {
                    "kind": "ConfigMap", "apiVersion": "v1",
                    "metadata": {"name": "extension-apiserver-authentication",
                                 "namespace": "kube-system", "resourceVersion": "1"},
                    "data": data})
            if method == "POST" and path == "/apis/authentication.k8s.io/v1/tokenreviews":
                return self.token_review(body)
            if method == "POST" and path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
                return self.access_review(body)
            return self.send_status(404, "NotFound", "the server could not find the requested "
                                    "resource")

        # Pods.
        def selectors(self, query):
            labels = parse_selector(query.get("labelSelector"), "label")
            fields = parse_selector(query.get("fieldSelector"), "field")
            for key, _, _ in fields:
                if key not in FIELDS:
                    raise ValueError('"%s" is not a known field selector: only "%s"' %
                                     (key, '", "'.join(FIELDS)))
            return labels, fields

        def list(self, namespace, query):
            labels, fields = self.selectors(query)
            limit = int(query.get("limit") or 0)
            offset = 0
            with server.cond:
                server.stats["lists"] += 1
                rv = server.rv
                if query.get("continue"):
                    token = json.loads(base64.b64decode(query["continue"]))
                    if token["rv"] < server.compacted_rv:
                        return self.send_status(
                            410, "Expired",
                            "The provided continue parameter is too old to display a consistent "
                            "list result. You can start a new list without the continue "
                            "parameter.")
                    rv, offset = token["rv"], token["offset"]
                items = sorted(
                    (p for p in server.pods.values() if matches(p, namespace, labels, fields)),
                    key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
                items = json.loads(json.dumps(items))
            page = items[offset:offset + limit] if limit else items[offset:]
            metadata = {"resourceVersion": str(rv)}
            if limit and offset + limit < len(items):
                metadata["continue"] = base64.b64encode(
                    json.dumps({"rv": rv, "offset": offset + limit}).encode()).decode()
                metadata["remainingItemCount"] = len(items) - offset - limit
            self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": metadata,
                                 "items": page})

        def send_chunk(self, obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def watch(self, namespace, query):
            labels, fields = self.selectors(query)
            since = int(query.get("resourceVersion") or 0)
            timeout = float(query.get("timeoutSeconds") or 1800)
            bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
            with server.cond:
                server.stats["watches"] += 1
                too_old = since < server.compacted_rv
                forced = server.faults["gone_next"] > 0
                if forced:
                    server.faults["gone_next"] -= 1
                mode = server.faults["gone_mode"]
                current = server.rv
            gone = status_object(410, "Expired", "too old resource version: %d (%d)" %
                                 (since, current))
            if too_old or forced:
                with server.cond:
                    server.stats["gone"] += 1
                if mode == "status" and forced:
                    return self.send_json(410, gone)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if too_old or forced:
                self.send_chunk({"type": "ERROR", "object": gone})
                self.wfile.write(b"0\r\n\r\n")
                return
            sock = self.request
            deadline = time.monotonic() + timeout
            with server.cond:
                server.watch_sockets.add(sock)
                generation = server.watch_generation
            try:
                last_bookmark = time.monotonic()
                while True:
                    with server.cond:
                        pending = [h for h in server.history if h[0] > since]
                        if not pending and not server.stopping and \
                                generation == server.watch_generation:
                            wait = min(deadline, last_bookmark +
                                       server.faults["bookmark_interval"]) - time.monotonic()
                            if wait > 0:
                                server.cond.wait(wait)
                            pending = [h for h in server.history if h[0] > since]
                        dropped = server.stopping or generation != server.watch_generation
                        current = server.rv
                    if dropped:
                        self.close_connection = True
                        return
                    for rv, kind, pod in pending:
                        since = rv
                        if matches(pod, namespace, labels, fields):
                            self.send_chunk({"type": kind,
                                             "object": dict(pod, kind="Pod", apiVersion="v1")})
                    now = time.monotonic()
                    if now >= deadline:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                        return
                    if bookmarks and now - last_bookmark >= server.faults["bookmark_interval"]:
                        since = max(since, current)
                        self.send_chunk({"type": "BOOKMARK", "object": {
                            "kind": "Pod", "apiVersion": "v1",
                            "metadata": {"resourceVersion": str(since)}}})
                        last_bookmark = now
            finally:
                with server.cond:
                    server.watch_sockets.discard(sock)

        # Reviews.
        def token_review(self, body):
            review = json.loads(body or b"{}")
            spec = review.get("spec") or {}
            with server.cond:
                server.token_reviews.append(review)
                user = server.tokens.get(spec.get("token", ""))
            status = {"authenticated": user is not None}
            if user is not None:
                status["user"] = {k: v for k, v in user.items() if v}
                status["audiences"] = spec.get("audiences") or ["https://kubernetes.default.svc"]
            else:
                status["error"] = "invalid bearer token"
            self.send_json(201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                                 "metadata": {"creationTimestamp": None}, "spec": spec,
                                 "status": status})

        def access_review(self, body):
            review = json.loads(body or b"{}")
            spec = review.get("spec") or {}
            with server.cond:
                server.access_reviews.append(review)
                allowed = server.allowed(spec)
            status = {"allowed": allowed}
            status["reason"] = "allowed by the fake policy" if allowed else \
                "no rule of the fake policy allows it"
            self.send_json(201, {"kind": "SubjectAccessReview",
                                 "apiVersion": "authorization.k8s.io/v1",
                                 "metadata": {"creationTimestamp": None}, "spec": spec,
                                 "status": status})

        # Control.
        def control(self, method, path, query):
            value = self.read_json() if method == "POST" else None
            if method == "POST" and path == "/_fake/pods":
                return self.send_json(200, server.put_pod(value))
            if method == "POST" and path == "/_fake/pods/delete":
                found = server.delete_pod(value.get("namespace"), value.get("name"),
                                          value.get("uid"))
                return self.send_json(200 if found else 404, {"deleted": found})
            if method == "POST" and path == "/_fake/faults":
                server.set_faults(**value)
                return self.send_json(200, server.faults)
            if method == "POST" and path == "/_fake/tokens":
                server.set_tokens(value)
                return self.send_json(200, {})
            if method == "POST" and path == "/_fake/policy":
                server.set_policy(value.get("rules", []))
                return self.send_json(200, {})
            if method == "POST" and path == "/_fake/configmap":
                server.set_configmap(value)
                return self.send_json(200, {})
            if method == "GET" and path == "/_fake/reviews":
                return self.send_json(200, server.reviews())
            if method == "GET" and path == "/_fake/stats":
                with server.cond:
                    stats = dict(server.stats, watches_open=len(server.watch_sockets),
                                 resource_version=server.rv, pods=len(server.pods))
                return self.send_json(200, stats)
            return self.send_json(404, {"error": "no such control endpoint"})

    return Handler


def parse_token(text):
    token, _, rest = text.partition("=")
    user, _, groups = rest.partition(":")
    return token, {"username": user, "uid": "uid-" + user,
                   "groups": [g for g in groups.split(",") if g]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca")
    parser.add_argument("--token", action="append", default=[],
                        help="TOKEN=USER[:GROUP,...]; default: test-token=admin:system:masters")
    args = parser.parse_args()
    tokens = dict(parse_token(t) for t in (args.token or ["test-token=admin:system:masters"]))
    server = FakeApiServer(args.tls_cert, args.tls_key, args.client_ca, tokens).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.port)
    os.rename(tmp, args.port_file)
    print(server.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
