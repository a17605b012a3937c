"""`necroui serve`: the dashboard in headless Chromium, attached to a real headless dispatcher.

The page needs the admin token; loaded with it, the browser's terminal receives the dashboard
(the queue panel and the taskset's tasks). The bytes the page's websocket receives are what
its terminal draws: a hook in the page keeps them to read back over the DevTools protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import wait_until
from test_attach import _start, _stop, _url, dispatcher  # noqa: F401 - the fixture
from test_engine_demo import child_env

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--window-size=1400,1000"]

HOOK = """
(() => {
  window.__necro_text = "";
  const Real = window.WebSocket;
  function Hooked(url, protocols) {
    const ws = protocols === undefined ? new Real(url) : new Real(url, protocols);
    ws.addEventListener("message", async (event) => {
      let data = event.data;
      if (data instanceof Blob) { data = await data.arrayBuffer(); }
      if (data instanceof ArrayBuffer) { data = new TextDecoder().decode(data); }
      window.__necro_text += String(data);
    });
    return ws;
  }
  Hooked.prototype = Real.prototype;
  for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) { Hooked[k] = Real[k]; }
  window.WebSocket = Hooked;
})();
"""
_ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/console.sh installs it")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return found


async def _page_text(devtools: str, url: str, want: list[str], timeout: float) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.put(f"{devtools}/json/new?about:blank") as resp:
            target = json.loads(await resp.text())
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 10_000))

            async def call(method: str, **params: Any) -> dict[str, Any]:
                msg_id = next(ids)
                await ws.send_json({"id": msg_id, "method": method, "params": params})
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == msg_id:
                        return dict(data.get("result") or {})
                raise AssertionError("devtools connection closed")

            await call("Page.enable")
            await call("Page.addScriptToEvaluateOnNewDocument", source=HOOK)
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            text = ""
            while time.monotonic() < deadline:
                result = await call("Runtime.evaluate", expression="window.__necro_text || ''")
                text = _ANSI.sub("", str(result.get("result", {}).get("value", "")))
                if all(w in text for w in want):
                    break
                await asyncio.sleep(0.5)
            shot = await call("Page.captureScreenshot", format="png")
            Path(os.environ.get("NECROUI_SERVE_SHOT", "/tmp/necroui-serve.png")).write_bytes(
                __import__("base64").b64decode(shot.get("data", "")))
            return text


def test_serve_shows_the_queue_in_chromium(dispatcher: tuple[list[str], Path],  # noqa: F811
                                           tmp_path: Path) -> None:
    chromium = _chromium()
    base, root = dispatcher
    state = root / ".necrocode"
    proc = _start(base, root)
    server: subprocess.Popen[str] | None = None
    browser: subprocess.Popen[str] | None = None
    try:
        url = _url(state)
        token = (state / "admin.token").read_text().strip()
        port = _free_port()
        server = subprocess.Popen([*base, "serve", url, "--port", str(port)], cwd=root,
                                  env=child_env(root, 1.0), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        page = f"http://127.0.0.1:{port}/"

        def answer(u: str) -> int | None:
            try:
                with urllib.request.urlopen(u, timeout=5) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return None

        assert wait_until(lambda: answer(page), 60, "necroui serve listening") == 401
        assert answer(page + "?token=wrong") == 401
        browser = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}/c",
                                    "--remote-debugging-port=0", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        devtools = ""
        assert browser.stderr is not None
        for line in browser.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/…"
            found = re.search(r"ws://(127\.0\.0\.1:\d+)/", line)
            if found:
                devtools = f"http://{found.group(1)}"
                break
        assert devtools, "chromium printed no DevTools address"
        text = asyncio.run(_page_text(devtools, f"{page}?token={token}",
                                      ["Queue", "far/t", "necroui"], timeout=90))
        assert "Queue" in text and "far/t" in text, text[-3000:]
    finally:
        for p in (browser, server):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        _stop(proc)
    assert sys.executable
