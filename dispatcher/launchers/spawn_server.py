"""The spawn server: one small process that starts a local launcher's agents and records how
each one ended (run as a program by :mod:`.spawner`; standard library only).

The Dispatcher asks it, over a socket, to start a command in its own session with its output
appended to the attempt's log; the server answers with the pid. When a child ends, the server
first looks at its status without reaping it (``waitid(WNOWAIT)``), writes the attempt's
``exit_status.json`` (unless the agent runner wrapper wrote a richer one), then reaps it and
tells the Dispatcher. So, as with a trampoline shell, a runner whose process is gone always has
its status on disk, but a task costs one exec instead of two.

The server lives in its own session and outlives the Dispatcher that started it: when the
Dispatcher dies, the children go on, their statuses are still written, and a restarted
Dispatcher adopts them from their ``runner.json``. The server exits once its Dispatcher has gone
(the socket closed) and its last child ended.

Where runners get cgroups, the server lives in a leaf cgroup of its own and steps into the
runner's cgroup for the moment of the spawn, so the child starts inside it and everything the
agent starts stays there.

Protocol: one JSON document per line each way. Requests ``{"id", "argv", "cwd", "env", "log",
"exit_file", "runner_id", "cgroup"}``; answers ``{"id", "pid"}`` or ``{"id", "error"}``;
notices ``{"exit": runner_id, "pid", "rc"}`` (``rc`` negative: killed by that signal).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from typing import Any

_EXIT_DOC = '{{"exit_code": {rc}, "runner_id": "{rid}", "source": "spawn-server"}}\n'


class Server:
    """The server's state: its socket, its children, and its own cgroup (if any)."""

    def __init__(self, sock: socket.socket, home_cgroup: str | None) -> None:
        self.sock = sock
        self.home = home_cgroup
        self.children: dict[int, tuple[subprocess.Popen[bytes], str, str]] = {}
        self.connected = True
        self._buf = b""

    # --- requests ----------------------------------------------------------------------------
    def read_requests(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.connected = False
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            if line.strip():
                self.send(self.spawn(json.loads(line)))

    def spawn(self, req: dict[str, Any]) -> dict[str, Any]:
        cgroup = req.get("cgroup")
        try:
            with open(req["log"], "ab") as log:
                if log.tell() > 0:  # an earlier run of this attempt (requeued at shutdown)
                    log.write(f"\n--- necrocode: runner {req['runner_id']} started ---\n"
                              .encode())
                    log.flush()
                if cgroup:
                    _enter(cgroup)
                try:
                    proc = subprocess.Popen(
                        req["argv"], cwd=req["cwd"], env=req["env"], stdin=subprocess.DEVNULL,
                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                        close_fds=True)
                finally:
                    if cgroup and self.home:
                        _enter(self.home)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return {"id": req.get("id"), "error": str(exc)}
        self.children[proc.pid] = (proc, str(req["runner_id"]), str(req["exit_file"]))
        return {"id": req.get("id"), "pid": proc.pid}

    # --- children ----------------------------------------------------------------------------
    def reap(self) -> None:
        """Record and reap every child that ended."""
        while self.children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            rc = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            entry = self.children.pop(pid, None)
            if entry is None:  # not one of ours (cannot happen): reap it all the same
                os.waitpid(pid, 0)
                continue
            proc, runner_id, exit_file = entry
            _record(exit_file, runner_id, rc)
            proc.wait()
            self.send({"exit": runner_id, "pid": pid, "rc": rc})

    def send(self, message: dict[str, Any]) -> None:
        if not self.connected:
            return
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            self.connected = False


def _record(exit_file: str, runner_id: str, rc: int) -> None:
    """The trampoline's rule: a status the agent runner wrote first is kept; one write of a
    whole document (readers treat an empty or partial file as no status yet)."""
    if not exit_file or os.path.exists(exit_file):
        return
    code = rc if rc >= 0 else 128 - rc  # as a shell reports a child killed by a signal
    try:
        fd = os.open(exit_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, _EXIT_DOC.format(rc=code, rid=runner_id).encode())
    finally:
        os.close(fd)


def _enter(cgroup: str) -> None:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))


def main(argv: list[str]) -> int:
    fd = int(argv[1])
    home = argv[2] if len(argv) > 2 and argv[2] else None
    sock = socket.socket(fileno=fd)
    if home:
        try:
            os.makedirs(home, exist_ok=True)
            _enter(home)
        except OSError:
            home = None  # spawns then stay in the server's cgroup: the runner's is not used
    os.chdir("/")  # never hold a slot's folder
    # the Dispatcher stops runners, not this; a handler (not SIG_IGN, which children would
    # inherit across exec) keeps a stray signal to the group or the cgroup from ending it
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    server = Server(sock, home)
    server.send({"ready": os.getpid(), "cgroup": home})
    while server.connected or server.children:
        fds = [sock.fileno(), wake_r] if server.connected else [wake_r]
        ready, _, _ = select.select(fds, [], [], 1.0)
        if wake_r in ready:
            os.read(wake_r, 4096)
        if server.connected and sock.fileno() in ready:
            server.read_requests()
        server.reap()
    return 0  # its empty cgroup is removed by the next launcher (see proctree's prune)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
