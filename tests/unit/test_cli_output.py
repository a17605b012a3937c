"""What necroui prints: tables that survive a pipe, warnings, wording of messages."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from necroui import console
from necroui.cli import main

LONG = "A rather long title that goes on and on, well past eighty columns of a terminal"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NECROCODE_CONFIG", raising=False)
    return {"NECROCODE_REGISTRY": str(tmp_path / "reg.db")}


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


# --- tables when stdout is not a terminal ------------------------------------------------------


def test_piped_tasks_table_has_one_line_per_task(env: dict[str, str], tmp_path: Path) -> None:
    items = "".join(f"  - {{id: t{i}, title: '{LONG} {i}', skill: backend-work}}\n"
                    for i in range(1, 4))
    run(env, "submit", write(tmp_path / "t.yaml", "taskset: sig\ntasks:\n" + items))
    lines = run(env, "tasks").output.splitlines()
    assert len(lines) == 4, lines
    assert lines[1].split(None, 6) == ["sig/t1", "ready", "0", "backend-work", "sig", "0",
                                       f"{LONG} 1"]
    assert all(line == line.rstrip() for line in lines)
    assert "\x1b[" not in "".join(lines)  # no colour codes in a pipe


def test_piped_config_keys_has_one_line_per_key(env: dict[str, str]) -> None:
    from necrocode.dispatcher.config_reference import config_reference

    lines = run(env, "config", "keys").output.splitlines()
    assert len(lines) == 1 + len(config_reference())
    assert any(len(line) > 100 for line in lines)  # long meanings are not wrapped


def test_piped_status_tables_are_not_wrapped() -> None:
    from io import StringIO

    out = StringIO()
    stdout, sys.stdout = sys.stdout, out
    try:
        console.print_status({
            "state": "running", "api_url": "http://x", "pools": [],
            "running": [], "queued": [{"position": 1, "key": "s/1", "priority": 0,
                                       "pending": {"message": LONG * 2}}]})
    finally:
        sys.stdout = stdout
    queued = [line for line in out.getvalue().splitlines() if "s/1" in line]
    assert len(queued) == 1 and queued[0].endswith(LONG * 2)


def test_terminal_gets_the_rich_table(env: dict[str, str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "stdout_console", lambda: Console(
        file=sys.stdout, force_terminal=True, width=60, highlight=False))
    run(env, "submit", write(tmp_path / "t.yaml", f"taskset: s\ntasks:\n  - {{id: a, "
                             f"title: '{LONG}'}}\n"))
    out = run(env, "tasks").output
    assert "\x1b[" in out  # coloured state
    assert len(out.splitlines()) > 2  # the title folds to the terminal's width


def test_plain_lines_align_and_right_justify() -> None:
    lines = console.plain_lines(["KEY", "N", "WHAT"], [("a", 5, "x y"), ("bbbb", 10, None)],
                                right=("N",))
    assert lines == ["KEY    N  WHAT", "a      5  x y", "bbbb  10  -"]


def test_a_closed_pipe_ends_quietly() -> None:
    """`necroui tasks | head`: no 'error: [Errno 32] Broken pipe' once head has its lines."""
    import click

    from necroui.cli_common import NecroGroup

    @click.group(cls=NecroGroup)
    def group() -> None:
        pass

    @group.command()
    def emit() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    result = CliRunner().invoke(group, ["emit"])
    assert result.exit_code == 141
    assert result.output == "" and "rror" not in result.stderr


# --- warnings ----------------------------------------------------------------------------------


def test_import_kiro_warns_that_tasks_cannot_run_without_agent_command(
        env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "tasks.md", "- [x] 1. Done\n- [ ] 2. Build\n- [ ] 3. Test\n")
    result = CliRunner().invoke(main, ["import-kiro", path], env=env)
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "2 tasks of " in warnings[0] and "have no `command:`" in warnings[0]
    assert "add `agent_command:` to pool 'local'" in warnings[0]
    config = write(tmp_path / "c.yaml", """\
        agent_pools:
          local: {max_concurrency: 2, agent_command: [my-agent, "{task_id}"]}
        """)
    result = CliRunner().invoke(main, ["--config", config, "import-kiro", "--dry-run", path],
                                env=env)
    assert "warning" not in result.stderr


# --- help texts --------------------------------------------------------------------------------


def test_metrics_help_example_matches_real_metrics(env: dict[str, str]) -> None:
    """QA: the example grepped for a metric name that does not exist."""
    import re

    help_text = run(env, "metrics", "--help").output
    pattern = re.search(r"necroui metrics \| grep (\S+)", help_text)
    assert pattern, help_text
    metrics = run(env, "metrics").output  # no dispatcher runs: computed from the registry
    assert [line for line in metrics.splitlines() if pattern.group(1) in line]


# --- re-submit -----------------------------------------------------------------------------------


def test_resubmit_lists_tasks_no_longer_in_the_file(env: dict[str, str], tmp_path: Path) -> None:
    """QA: a dropped task was kept silently ('0 created, 1 updated')."""
    path = tmp_path / "rs.yaml"
    write(path, "taskset: rs\ntasks:\n  - {id: a, title: a}\n"
          "  - {id: b, title: b, depends_on: [a]}\n")
    assert run(env, "submit", str(path)).exit_code == 0
    write(path, "taskset: rs\ntasks:\n  - {id: a, title: a renamed}\n")
    out = run(env, "submit", str(path)).stdout.splitlines()
    assert out == ["rs: 0 created, 1 updated, 0 unchanged; 1 ready to run",
                   "kept 1 task not in the file: rs/b (blocked); cancel it with "
                   "`necroui cancel rs/b`"]
    out = run(env, "submit", "--dry-run", str(path)).stdout.splitlines()
    assert out[1].startswith("would keep 1 task not in the file: rs/b (blocked)")
    run(env, "cancel", "rs/b")
    out = run(env, "submit", str(path)).stdout.splitlines()
    assert out[1] == "kept 1 task not in the file: rs/b (cancelled)"


# --- wording -------------------------------------------------------------------------------------


def test_status_without_a_dispatcher_says_so(env: dict[str, str]) -> None:
    out = run(env, "status").stdout
    assert out.splitlines()[0] == (
        f"no Dispatcher is running for registry {env['NECROCODE_REGISTRY']} "
        "(start one with `necroui` or `necroui --no-tui`)")


def test_unknown_config_key_names_its_section_without_a_stray_colon(
        env: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "dispatcher:\n  pol_interval: 3\nui:\n  refesh: 1\n")
    err = CliRunner().invoke(main, ["config", "check", path], env=env).stderr
    assert "dispatcher.pol_interval: unknown key in section dispatcher (did you mean " in err
    assert "ui.refesh: unknown key in section ui (" in err
    assert ": (" not in err


@pytest.mark.parametrize("command", ["graph", "plan"])
def test_read_only_commands_do_not_say_nothing_written(env: dict[str, str], tmp_path: Path,
                                                       command: str) -> None:
    path = write(tmp_path / "cyc.yaml", "taskset: cyc\ntasks:\n"
                 "  - {id: a, title: a, depends_on: [b]}\n  - {id: b, title: b, depends_on: [a]}\n")
    result = CliRunner().invoke(main, [command, path], env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: invalid taskset {path} (1 problem(s)):")
    assert "dependency cycle: a -> b -> a" in result.stderr
    assert "nothing written" not in result.stderr


@pytest.mark.parametrize("args", [["tasks"], ["status"], ["metrics"], ["cancel", "s/a"],
                                  ["submit", "t.yaml"], ["--no-tui"]])
def test_registry_directory_is_refused_with_a_file_suggestion(
        env: dict[str, str], tmp_path: Path, args: list[str]) -> None:
    folder = tmp_path / "regs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a registry")  # an empty one is a NecroCode registry
    write(tmp_path / "t.yaml", "taskset: s\ntasks:\n  - {id: a, title: a}\n")
    result = CliRunner().invoke(main, ["--registry", str(folder), *args], env=env)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: --registry {folder} is a directory but not a NecroCode registry (it has no "
        f"tasksets/, events/ or locks/ folder); give a file path such as "
        f"{folder / 'registry.db'} for the embedded registry, or an empty directory to start a "
        "NecroCode one\n")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # nothing written


def test_tasks_sorted_by_taskset_then_id(env: dict[str, str], tmp_path: Path) -> None:
    for name in ("sig2", "sig"):
        run(env, "submit", write(tmp_path / f"{name}.yaml", f"taskset: {name}\ntasks:\n"
                                 "  - {id: b, title: b}\n  - {id: a, title: a}\n"))
    keys = [line.split()[0] for line in run(env, "tasks", "--sort", "key").stdout.splitlines()]
    assert keys == ["KEY", "sig/a", "sig/b", "sig2/a", "sig2/b"]


HELP_COMMANDS = [[], ["submit"], ["import-kiro"], ["tasks"], ["graph"], ["plan"], ["config"],
                 ["config", "check"], ["config", "show"], ["config", "keys"], ["status"],
                 ["metrics"], ["priority"], ["retry"], ["cancel"]]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "necroui")
def test_help_reads_cleanly(env: dict[str, str], command: list[str]) -> None:
    """QA: `priority --help` had a line of only whitespace (a stray \\b)."""
    text = CliRunner().invoke(main, [*command, "--help"], env=env, terminal_width=100).output
    lines = text.splitlines()
    assert not [line for line in lines if line and not line.strip()], text
    assert not any(ch < " " for line in lines for ch in line), text  # no \b, no tabs
    assert "\n\n\n" not in text
    assert all(len(line) <= 100 for line in lines), text
    # example comments line up (a comment one space after its command reads as arguments)
    import re

    columns = {m.end(1) for line in lines if line.startswith("    necroui ")
               for m in [re.search(r"\S( {2,})\S", line.strip())] if m}
    assert len(columns) <= 1, text


def test_main_help_example_comment_is_apart_from_its_command(env: dict[str, str]) -> None:
    text = run(env, "--help").output
    assert "necroui --no-tui --demo --until-done   run the demo headless" in text


# --- status of a big or busy dispatcher ----------------------------------------------------------


def _fake_remote(monkeypatch: pytest.MonkeyPatch, url: str | None,
                 status: dict[str, object] | None = None) -> None:
    import types

    remote = types.ModuleType("necroui.remote")
    remote.TIMEOUT = 10.0  # type: ignore[attr-defined]
    remote.find_dispatcher = lambda config: (url, "tok") if url else None  # type: ignore[attr-defined]
    from necrocode.dispatcher.api import client

    def fetch_status(config: object, *, timeout: float = 10.0,
                     **limits: int | None) -> dict[str, object]:
        if url:  # a "running" dispatcher: the real HTTP client, as necroui.remote does
            return client.status(url, "tok", timeout=timeout)
        return status or {}

    def fetch_metrics(config: object, *, timeout: float = 10.0) -> str:
        return client.metrics(url, timeout=timeout) if url else ""

    remote.fetch_status = fetch_status  # type: ignore[attr-defined]
    remote.fetch_metrics = fetch_metrics  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "necroui.remote", remote)


def test_status_of_a_big_queue_is_bounded(env: dict[str, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    queued = [{"position": i, "key": f"big/{i}", "priority": 0,
               "pending": {"message": "waits for its turn"}} for i in range(10_000, 0, -1)]
    queued.append({"position": None, "key": "big/blocked", "priority": 0, "pending": {}})
    _fake_remote(monkeypatch, None, {"state": "running", "api_url": "http://x", "policy": "fifo",
                                     "running": [], "queued": queued})
    lines = run(env, "status").stdout.splitlines()
    rows = [line.split()[1] for line in lines if line.split()[:1] and line.split()[0].isdigit()]
    assert rows == [f"big/{i}" for i in range(1, 21)]  # the first 20 in dispatch order
    assert lines[-1] == "... and 9981 more queued (--queued N shows more)"
    lines = run(env, "status", "--queued", "3").stdout.splitlines()
    assert lines[-1] == "... and 9998 more queued (--queued N shows more)"


def test_status_timeout_says_the_dispatcher_is_busy(env: dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """QA: a slow answer read 'cannot reach the dispatcher: timed out'."""
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        _fake_remote(monkeypatch, url)
        result = CliRunner().invoke(main, ["status", "--timeout", "0.2"], env=env)
        metrics = CliRunner().invoke(main, ["metrics", "--timeout", "0.2"], env=env)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"error: the dispatcher at {url} did not answer within 0.2 s (it may be busy)")
    assert "try again or use --timeout" in result.stderr
    assert "cannot reach" not in result.stderr
    assert "did not answer within 0.2 s" in metrics.stderr


def test_status_from_a_live_api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            body = json.dumps({"state": "running", "api_url": "u", "policy": "fifo",
                               "counters": {"total": 1, "running": 1},
                               "auth": self.headers.get("Authorization")}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _fake_remote(monkeypatch, f"http://127.0.0.1:{server.server_port}")
        out = run(env, "status", "--timeout", "30").stdout
        data = json.loads(run(env, "status", "--json").stdout)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert out.splitlines()[:2] == ["dispatcher running at u, policy fifo",
                                    "tasks: total 1, running 1"]
    assert data["auth"] == "Bearer tok"


def test_control_timeout_through_the_real_remote(env: dict[str, str], tmp_path: Path) -> None:
    """A control verb whose answer does not come says so (it may still apply)."""
    import socket

    from necrocode.dispatcher.state_files import ADMIN_TOKEN_FILE, write_dispatcher_info

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        write_dispatcher_info(tmp_path, url, env["NECROCODE_REGISTRY"])
        (tmp_path / ADMIN_TOKEN_FILE).write_text("tok")
        import necroui.remote as remote

        saved, remote.TIMEOUT = remote.TIMEOUT, 0.2
        try:
            result = CliRunner().invoke(main, ["cancel", "s/a"], env=env)
            status = CliRunner().invoke(main, ["status", "--timeout", "0.2"], env=env)
        finally:
            remote.TIMEOUT = saved
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"error: the dispatcher at {url} did not answer within 0.2 s (it may be busy); the "
        "cancel may still be applied")
    assert f"error: the dispatcher at {url} did not answer within 0.2 s" in status.stderr
