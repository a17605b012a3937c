"""A scripted model server on 127.0.0.1 for the real agent CLIs (the agents demo and the tests).

It speaks OpenAI Responses (Codex, streamed SSE), OpenAI Chat Completions (mini-swe-agent,
aider), Anthropic Messages (Claude Code, SSE) and Gemini ``streamGenerateContent`` (SSE). It is
stateless, as AGENTS.md describes: it counts the tool results already in the conversation (N)
and answers step N of its script, a shell command as the CLI's own shell tool, or the final
text. Requests that offer no tools (titles, summaries) get a short text. A test sets what
happens with :meth:`ModelServer.configure`: an HTTP error status, or a stall from some step on
(the request hangs until :meth:`ModelServer.release`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: The final step of mini-swe-agent: a command whose output's first line submits.
MINI_SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
INPUT_TOKENS = 100  # per request, plus 10 per step already done
OUTPUT_TOKENS = 20
CACHED_TOKENS = 30


@dataclass
class Script:
    """What the model answers: ``commands`` one by one, then ``final`` (text)."""

    commands: list[str] = field(default_factory=list)
    final: str = "Done."
    error_status: int | None = None  # answer every request with this HTTP status
    stall_from: int | None = None  # requests at step >= this hang until released


class ModelServer:
    """The server; ``with ModelServer() as s: s.url``. Thread-safe configuration."""

    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[tuple[str, int]] = []  # (path, step) of every request
        self.stalled = threading.Event()  # a request is hanging now
        self._release = threading.Event()
        self._lock = threading.Lock()
        server = self
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="model-server")

    @property
    def url(self) -> str:
        port = self._httpd.server_address[1]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()

    def configure(self, script: Script) -> None:
        """A new script; forgets the requests seen and releases stalled ones."""
        self.release()
        with self._lock:
            self.script = script
            self.requests = []
            self.stalled.clear()
            self._release = threading.Event()

    def release(self) -> None:
        """Let stalled requests end (their connection is closed without an answer)."""
        self._release.set()

    def steps_seen(self) -> list[int]:
        with self._lock:
            return [step for _path, step in self.requests]

    # --- per request -------------------------------------------------------------------------
    def _begin(self, path: str, step: int) -> tuple[Script, threading.Event]:
        with self._lock:
            self.requests.append((path, step))
            return self.script, self._release

    def step_answer(self, step: int, script: Script, mini: bool = False) -> tuple[str, str]:
        """("shell", command) or ("text", final text) for step ``step``."""
        if step < len(script.commands):
            return "shell", script.commands[step]
        if mini:
            return "shell", f"{MINI_SUBMIT}\necho {json.dumps(script.final)}"
        return "text", script.final


def _usage(step: int) -> tuple[int, int]:
    return INPUT_TOKENS + 10 * step, OUTPUT_TOKENS


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self._json(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}],
                             "models": []})

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            path = self.path.split("?")[0]
            protocol, step, tools = _classify(path, body)
            script, release = server._begin(path, step)
            if protocol == "other":
                self._json(200, {"totalTokens": 10, "input_tokens": 10})
                return
            if script.error_status is not None:
                self._error(protocol, script.error_status)
                return
            if tools and script.stall_from is not None and step >= script.stall_from:
                server.stalled.set()
                release.wait(120)
                self.close_connection = True
                return
            kind, value = (server.step_answer(step, script, mini=protocol == "chat") if tools
                           else ("text", "ok"))
            streamed = bool(body.get("stream")) or "streamGenerateContent" in path
            getattr(self, f"_{protocol.replace('-', '_')}")(kind, value, step, streamed)

        # --- answers ---------------------------------------------------------------------
        def _responses(self, kind: str, value: str, step: int, streamed: bool) -> None:
            inp, out = _usage(step)
            rid = f"resp_{step}_{time.monotonic_ns()}"
            item: dict[str, Any]
            if kind == "shell":
                item = {"type": "function_call", "id": f"fc_{rid}", "call_id": f"call_{rid}",
                        "name": "exec_command", "arguments": json.dumps({"cmd": value}),
                        "status": "completed"}
            else:
                item = {"type": "message", "id": f"msg_{rid}", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": value, "annotations": []}]}
            usage = {"input_tokens": inp, "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
                     "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": inp + out}
            resp = {"id": rid, "object": "response", "created_at": int(time.time()),
                    "status": "completed", "model": "test-model", "output": [item],
                    "usage": usage}
            events: list[tuple[str, dict[str, Any]]] = [
                ("response.created", {"response": {**resp, "status": "in_progress",
                                                   "output": [], "usage": None}}),
                ("response.output_item.added", {"output_index": 0, "item": item}),
            ]
            if kind == "text":
                events.append(("response.output_text.delta",
                               {"output_index": 0, "item_id": item["id"], "content_index": 0,
                                "delta": value}))
            events += [("response.output_item.done", {"output_index": 0, "item": item}),
                       ("response.completed", {"response": resp})]
            self._sse((name, {"type": name, **data}) for name, data in events)

        def _chat(self, kind: str, value: str, step: int, streamed: bool) -> None:
            inp, out = _usage(step)
            message: dict[str, Any] = {"role": "assistant", "content": None}
            if kind == "shell":
                message["content"] = "Running a command."
                message["tool_calls"] = [{"id": f"call_{step}", "type": "function", "function": {
                    "name": "bash", "arguments": json.dumps({"command": value})}}]
                finish = "tool_calls"
            else:
                message["content"] = value
                finish = "stop"
            self._json(200, {
                "id": f"chatcmpl-{step}", "object": "chat.completion",
                "created": int(time.time()), "model": "test-model",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": inp, "completion_tokens": out,
                          "total_tokens": inp + out}})

        def _messages(self, kind: str, value: str, step: int, streamed: bool) -> None:
            inp, out = _usage(step)
            if kind == "shell":
                block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{step}_"
                                         f"{time.monotonic_ns()}", "name": "Bash",
                                         "input": {"command": value}}
                stop = "tool_use"
            else:
                block = {"type": "text", "text": value}
                stop = "end_turn"
            usage = {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": 0,
                     "cache_creation_input_tokens": 0}
            msg = {"id": f"msg_{step}_{time.monotonic_ns()}", "type": "message",
                   "role": "assistant", "model": "test-model", "content": [block],
                   "stop_reason": stop, "stop_sequence": None, "usage": usage}
            if not streamed:
                self._json(200, msg)
                return
            if block["type"] == "tool_use":
                start = {**block, "input": {}}
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            else:
                start = {"type": "text", "text": ""}
                delta = {"type": "text_delta", "text": value}
            events: list[tuple[str, dict[str, Any]]] = [
                ("message_start", {"message": {**msg, "content": [], "stop_reason": None,
                                               "usage": {**usage, "output_tokens": 1}}}),
                ("content_block_start", {"index": 0, "content_block": start}),
                ("content_block_delta", {"index": 0, "delta": delta}),
                ("content_block_stop", {"index": 0}),
                ("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                   "usage": {"output_tokens": out}}),
                ("message_stop", {}),
            ]
            self._sse((name, {"type": name, **data}) for name, data in events)

        def _gemini_sse(self, kind: str, value: str, step: int, streamed: bool) -> None:
            inp, out = _usage(step)
            part = ({"functionCall": {"name": "run_shell_command", "args": {"command": value}}}
                    if kind == "shell" else {"text": value})
            answer = {"candidates": [{"content": {"role": "model", "parts": [part]},
                                      "finishReason": "STOP", "index": 0}],
                      "usageMetadata": {"promptTokenCount": inp, "candidatesTokenCount": out,
                                        "totalTokenCount": inp + out},
                      "modelVersion": "test-model"}
            if streamed:
                self._sse([(None, answer)])
            else:
                self._json(200, answer)

        # --- transport -------------------------------------------------------------------
        def _json(self, status: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _sse(self, events: Any) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for name, data in events:
                head = f"event: {name}\n" if name else ""
                self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

        def _error(self, protocol: str, status: int) -> None:
            message = {401: "invalid api key (scripted)", 500: "internal error (scripted)"}.get(
                status, f"error {status} (scripted)")
            if protocol == "messages":
                body: dict[str, Any] = {"type": "error", "error": {
                    "type": "authentication_error" if status == 401 else "api_error",
                    "message": message}}
            elif protocol == "gemini-sse":
                body = {"error": {"code": status, "message": message,
                                  "status": "UNAUTHENTICATED" if status == 401 else "INTERNAL"}}
            else:
                body = {"error": {"message": message, "type": "invalid_request_error",
                                  "code": "invalid_api_key" if status == 401 else None}}
            self._json(status, body)

    return Handler


_GEMINI = re.compile(r"/models/[^/:]+:(streamGenerateContent|generateContent)$")


def _classify(path: str, body: dict[str, Any]) -> tuple[str, int, bool]:
    """(protocol, step, offers tools) of a request."""
    if path.endswith("/responses"):
        items = body.get("input") or []
        n = sum(1 for i in items if isinstance(i, dict) and i.get("type") == "function_call_output")
        return "responses", n, bool(body.get("tools"))
    if path.endswith("/chat/completions"):
        msgs = body.get("messages") or []
        n = sum(1 for m in msgs if isinstance(m, dict) and m.get("role") == "tool")
        return "chat", n, bool(body.get("tools"))
    if path.endswith("/messages"):
        n = 0
        for m in body.get("messages") or []:
            content = m.get("content") if isinstance(m, dict) else None
            if isinstance(content, list):
                n += sum(1 for b in content
                         if isinstance(b, dict) and b.get("type") == "tool_result")
        return "messages", n, bool(body.get("tools"))
    if _GEMINI.search(path):
        n = 0
        for c in body.get("contents") or []:
            for p in (c.get("parts") or []) if isinstance(c, dict) else []:
                if isinstance(p, dict) and "functionResponse" in p:
                    n += 1
        tools = body.get("tools") or []
        offers = any(isinstance(t, dict) and t.get("functionDeclarations") for t in tools)
        return "gemini-sse", n, offers
    return "other", 0, False
