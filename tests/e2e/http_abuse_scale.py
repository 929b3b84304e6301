"""HTTP abuse at scale against the real agent (on a copy of the v1 fixture tree grown to 64 pods):
  - 10 000 connections opened and held (within the default --max-connections 16384): every one
    stays usable, /healthz answers throughout, and the agent's memory per held connection is
    measured and bounded;
  - past the cap (an agent with --max-connections 1000): each newcomer closes the least recently
    active idle connection, the agent never holds more than the cap, and /healthz still answers;
  - 100 pipelined requests on one connection are answered in order;
  - a 100 KiB header is refused with 431, a 2 MiB body with 413;
  - 10 clients that ask for /metrics/cadvisor 30 times over (6 MB, more than the kernel buffers)
    and never read are cut off at the server's 30 s write timeout while everyone else is served.
The test raises its own RLIMIT_NOFILE (the agent raises its own). It takes about 45 s."""
import os
import re
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from e2e import Agent, Tree, fail, grow, http_get, proc_fd_count, proc_rss_bytes  # noqa: E402

HELD = 10_000
CAP = 1000
NEVER_READ = 10
# A response the kernel can buffer whole is no test of the write timeout: loopback send buffers grow
# to 4 MiB. Each never-reader pipelines this many /metrics/cadvisor requests (~200 KB each).
PIPELINED_UNREAD = 30
WRITE_TIMEOUT_S = 30  # ServerOptions::write_timeout
# What one idle keep-alive connection may cost the agent: its session object, socket and the
# kernel's socket memory charged to it (counted in RSS only where the kernel does so), with room
# for allocator rounding. Measured: see tests/README.md.
MAX_BYTES_PER_CONNECTION = 8 << 10
SANITIZED = os.environ.get("NODEMETER_SANITIZED") == "1"
checks = []


def check(ok, what):
    checks.append((ok, what))
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    return ok


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(want, hard)), hard))


def healthz(agent, timeout=2.0):
    began = time.time()
    try:
        ok = http_get(agent.base + "/healthz", timeout=timeout)[0] == 200
    except OSError:
        ok = False
    return ok, time.time() - began


_pending = {}  # socket -> bytes received past the last response (pipelined answers)


def read_response(s, timeout=5.0):
    """One whole response (Content-Length framed) from a blocking socket: (head, body). Bytes of
    the next responses already received are kept for the next call."""
    s.settimeout(timeout)
    data = _pending.pop(s, b"")
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"content-length: (\d+)", head, re.I)
    length = int(m.group(1)) if m else 0
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    if len(body) > length:
        _pending[s] = body[length:]
    return head, body[:length]


def closed_by_peer(s):
    """True when the other side has closed this socket (EOF or reset), without blocking."""
    s.setblocking(False)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def request(port, payload, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(payload)
        return read_response(s, timeout)
    finally:
        s.close()


def never_readers(agent):
    conns = []
    for _ in range(NEVER_READ):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", agent.port))
        s.sendall(b"GET /metrics/cadvisor HTTP/1.1\r\nHost: x\r\n\r\n" * PIPELINED_UNREAD)
        conns.append(s)
    return conns


def pipelining_and_limits(agent):
    s = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
    paths = ["/healthz", "/metrics/resource", "/apis/metrics.k8s.io/v1beta1/pods", "/nowhere"] * 25
    s.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
    statuses = []
    for _ in paths:
        head, _ = read_response(s)
        statuses.append(head.split(b" ")[1] if head else b"")
    s.close()
    check(statuses == [b"200", b"200", b"200", b"404"] * 25,
          f"100 pipelined requests answered in order ({statuses[:5]}...)")

    head, _ = request(agent.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 431"), f"a 100 KiB header is refused with 431 ({head[:30]})")
    body = b"x" * (2 << 20)
    try:
        head, _ = request(agent.port, b"POST /metrics/resource HTTP/1.1\r\nHost: x\r\nContent-Length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body)
    except OSError as e:  # the server may close before the whole body went out: read what came
        head = str(e).encode()
    check(head.startswith(b"HTTP/1.1 413"), f"a 2 MiB body is refused with 413 ({head[:30]})")


def hold_many(agent):
    pid = agent.proc.pid
    time.sleep(0.5)
    rss0, fds0 = proc_rss_bytes(pid), proc_fd_count(pid)
    conns = []
    slow_health = []
    began = time.time()
    try:
        for i in range(HELD):
            conns.append(socket.create_connection(("127.0.0.1", agent.port), timeout=10))
            if i % 2000 == 1999:
                ok, took = healthz(agent)
                slow_health.append((i + 1, ok, round(took, 3)))
        opened = time.time() - began
        deadline = time.time() + 10
        while proc_fd_count(pid) < fds0 + HELD and time.time() < deadline:
            time.sleep(0.1)
        fds1 = proc_fd_count(pid)
        check(fds1 >= fds0 + HELD, f"the agent holds all {HELD} connections ({fds1 - fds0} more descriptors; "
              f"opened in {opened:.1f} s)")
        check(all(ok and took < 1.0 for _, ok, took in slow_health),
              f"/healthz answered within 1 s while they were opened ({slow_health})")
        ok, took = healthz(agent)
        check(ok and took < 1.0, f"/healthz answers with {HELD} connections held ({took * 1000:.0f} ms)")
        # Use the connections: every 50th sends a request on its held connection.
        answered = 0
        for s in conns[::50]:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in conns[::50]:
            head, _ = read_response(s)
            answered += head.startswith(b"HTTP/1.1 200")
        check(answered == len(conns[::50]), f"held connections stay usable ({answered}/{len(conns[::50])})")
        time.sleep(0.5)
        rss1 = proc_rss_bytes(pid)
        per = (rss1 - rss0) / HELD
        print(f"     agent RSS {rss0 >> 10} KiB -> {rss1 >> 10} KiB with {HELD} connections held: "
              f"{per:.0f} bytes per connection", flush=True)
        if not SANITIZED:
            check(per <= MAX_BYTES_PER_CONNECTION,
                  f"memory per held connection {per:.0f} B <= {MAX_BYTES_PER_CONNECTION} B")
        return per
    finally:
        for s in conns:
            s.close()


def over_cap(tree):
    with Agent("--interval=1s", "--window=3s", f"--max-connections={CAP}", *tree.flags()) as agent:
        pid = agent.proc.pid
        base = proc_fd_count(pid)
        first = [socket.create_connection(("127.0.0.1", agent.port), timeout=10) for _ in range(CAP)]
        time.sleep(0.5)
        # Make the first 100 recently active: they should survive; the next ones are the oldest idle.
        for s in first[:100]:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            read_response(s)
        extra = [socket.create_connection(("127.0.0.1", agent.port), timeout=10) for _ in range(300)]
        time.sleep(1.0)
        held = proc_fd_count(pid) - base
        check(held <= CAP, f"past --max-connections {CAP} the agent holds at most {CAP} ({held})")
        evicted = [i for i, s in enumerate(first) if closed_by_peer(s)]
        check(len(evicted) >= 300 and all(i >= 100 for i in evicted),
              f"each newcomer closed the least recently active idle connection ({len(evicted)} closed, "
              f"first {evicted[:3]})")
        for s in extra[-10:]:
            s.setblocking(True)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = sum(read_response(s)[0].startswith(b"HTTP/1.1 200") for s in extra[-10:])
        check(answered == 10, f"the newest connections are served ({answered}/10)")
        ok, _ = healthz(agent)
        check(ok, "/healthz answers past the cap")
        for s in first + extra:
            s.close()


def main():
    raise_nofile(2 * HELD + 4096)
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < HELD + 1024:
        print(f"SKIP: cannot raise RLIMIT_NOFILE to hold {HELD} connections")
        sys.exit(77)
    tree = Tree()
    try:
        grow(tree, 64)
        began = time.time()
        with Agent("--interval=1s", "--window=3s", *tree.flags()) as agent:
            pid = agent.proc.pid
            size = len(agent.get("/metrics/cadvisor")[2])
            fds0 = proc_fd_count(pid)
            stuck = never_readers(agent)
            stuck_at = time.time()
            time.sleep(1.0)
            print(f"     agent descriptors: {fds0} before, {proc_fd_count(pid)} with the never-readers")
            check(proc_fd_count(pid) >= fds0 + NEVER_READ - 1,
                  f"{NEVER_READ} clients sit on {PIPELINED_UNREAD} unread /metrics/cadvisor responses each "
                  f"({size} bytes each)")
            ok, took = healthz(agent)
            check(ok and took < 1.0, f"/healthz answers meanwhile ({took * 1000:.0f} ms)")

            pipelining_and_limits(agent)
            hold_many(agent)
            over_cap(tree)

            # The never-readers' write timeout has passed: the server closed them.
            wait = stuck_at + WRITE_TIMEOUT_S + 2 - time.time()
            if wait > 0:
                time.sleep(wait)
            # The clients still hold their ends, unread: only the server can have closed its ends.
            fds = proc_fd_count(pid)
            check(fds <= fds0 + 2, f"clients that never read were closed at the write timeout (agent "
                  f"descriptors {fds0} before them, {fds} now)")
            for s in stuck:
                s.close()
            ok, _ = healthz(agent)
            check(ok, "/healthz answers at the end")
            check(agent.stop() == 0, "the agent exits 0 on SIGTERM")
        print(f"     took {time.time() - began:.0f} s")
    finally:
        tree.cleanup()
    failed = [w for ok, w in checks if not ok]
    if failed:
        fail(f"{len(failed)} of {len(checks)} checks failed: {failed}")
    print(f"ok   {len(checks)} HTTP abuse checks passed")


if __name__ == "__main__":
    main()
