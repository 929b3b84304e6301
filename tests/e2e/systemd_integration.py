"""The agent under systemd's protocols, without systemd: sd_notify messages arrive on a
NOTIFY_SOCKET this test listens on (READY=1 after the first pass, STATUS=, WATCHDOG=1 from the
sampling loop, STOPPING=1 on SIGTERM), and a listening socket handed over with LISTEN_FDS (socket
activation) is served instead of the default address; with an explicit --listen as well, both are
served. (tests/e2e/systemd_units.py runs the unit files' own command line the same way.)"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from e2e import binary, http_get  # noqa: E402

checks = []


def check(ok, what):
    checks.append((ok, what))
    print(("ok   " if ok else "FAIL ") + what)


def listening_ports(pid):
    """The TCP ports the process itself holds listening sockets on (its fds against /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def start_activated(listener, notify_path, *flags):
    """The agent with `listener` handed over as fd 3 (LISTEN_FDS=1, LISTEN_PID its own PID)."""
    def hand_over():
        # Socket activation: the listening socket becomes fd 3 of the agent.
        os.dup2(listener.fileno(), 3)
        os.set_inheritable(3, True)

    env = dict(os.environ, NOTIFY_SOCKET=notify_path, LISTEN_FDS="1")
    # LISTEN_PID must be the agent's own PID: set by the shell that execs it.
    return subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$0" agent "$@"', binary(), *flags],
                            env=env, preexec_fn=hand_over, pass_fds=(3,),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def new_listener():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener, listener.getsockname()[1]


def explicit_listen_too(notify):
    """A handed-over socket and an explicit --listen: the agent serves both."""
    listener, port = new_listener()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        other = s.getsockname()[1]
    proc = start_activated(listener, notify.getsockname(), "--interval=200ms", "--window=1s",
                           f"--listen=127.0.0.1:{other}")
    try:
        deadline = time.time() + 10
        ready = False
        while time.time() < deadline and not ready:
            try:
                ready = notify.recv(4096).decode() == "READY=1"
            except socket.timeout:
                pass
        answers = [http_get(f"http://127.0.0.1:{p}/healthz")[0] for p in (port, other)] if ready else []
        check(answers == [200, 200], f"with --listen given too, both it and the handed-over socket answer {answers}")
        ports = listening_ports(proc.pid)
        check(ports == {port, other}, f"... and the agent listens on exactly those two ({sorted(ports)})")
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(10) == 0, "the agent exits 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()


def main():
    tmp = tempfile.mkdtemp(prefix="nodemeter-systemd-")
    notify_path = os.path.join(tmp, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)

    listener, port = new_listener()
    proc = start_activated(listener, notify_path, "--interval=200ms", "--window=1s")
    messages = []
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not any(m.startswith("READY=1") for m in messages):
            try:
                messages.append(notify.recv(4096).decode())
            except socket.timeout:
                pass
        check(any(m == "READY=1" for m in messages), "READY=1 arrives after the first pass")
        check(any(m.startswith("STATUS=tracking ") for m in messages), f"STATUS says what it tracks {messages[:1]}")
        status, _, body = http_get(f"http://127.0.0.1:{port}/healthz")
        check(status == 200 and body == "ok", "the handed-over socket is served (socket activation)")
        ports = listening_ports(proc.pid)
        check(ports == {port}, f"only the handed-over socket is listened on, not the default address ({sorted(ports)})")
        pings = 0
        end = time.time() + 1.5
        while time.time() < end:
            try:
                if notify.recv(4096).decode() == "WATCHDOG=1":
                    pings += 1
            except socket.timeout:
                pass
        check(pings >= 3, f"WATCHDOG=1 comes from the sampling loop every pass ({pings} in 1.5 s)")
        proc.send_signal(signal.SIGTERM)
        stopping = False
        end = time.time() + 5
        while time.time() < end and not stopping:
            try:
                stopping = notify.recv(4096).decode() == "STOPPING=1"
            except socket.timeout:
                pass
        check(stopping, "STOPPING=1 on SIGTERM")
        check(proc.wait(10) == 0, "the agent exits 0")
        explicit_listen_too(notify)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        listener.close()
        os.unlink(notify_path)
        os.rmdir(tmp)
    failed = [w for ok, w in checks if not ok]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    if failed:
        print(proc.stdout.read().decode(errors="replace"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
