"""The agent under systemd's protocols, without systemd: sd_notify messages arrive on a
NOTIFY_SOCKET this test listens on (READY=1 after the first pass, STATUS=, WATCHDOG=1 from the
sampling loop, STOPPING=1 on SIGTERM), and a listening socket handed over with LISTEN_FDS (socket
activation) is served instead of the default address."""
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


def main():
    tmp = tempfile.mkdtemp(prefix="nodemeter-systemd-")
    notify_path = os.path.join(tmp, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.2)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]

    def hand_over():
        # Socket activation: the listening socket becomes fd 3 of the agent.
        os.dup2(listener.fileno(), 3)
        os.set_inheritable(3, True)

    env = dict(os.environ, NOTIFY_SOCKET=notify_path, LISTEN_FDS="1")
    # LISTEN_PID must be the agent's own PID: set by the shell that execs it.
    proc = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$0" agent --interval=200ms --window=1s', binary()],
                            env=env, preexec_fn=hand_over, pass_fds=(3,),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
        try:
            socket.create_connection(("127.0.0.1", 10261), timeout=1).close()
            default_listening = True
        except OSError:
            default_listening = False
        check(not default_listening, "the default address is not bound when a socket is handed over")
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
