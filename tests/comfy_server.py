"""Drive a real ComfyUI server from tests: start it, queue workflows, read its websocket.

Standard library only, so the test environment needs nothing of ComfyUI's. The websocket client is
the small part of RFC 6455 a ComfyUI server uses: unmasked text and binary frames from the server,
pings, close.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Nodes that exist only in the front end: they never reach the server.
FRONTEND_ONLY = {"Note", "MarkdownNote"}
MUTED, BYPASSED = 2, 4  # LiteGraph node modes: "never" and "bypass"
FINISHED = {"execution_success", "execution_error", "execution_interrupted"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_widget(spec: list) -> bool:
    """Whether the front end shows this input as a widget (its value is in widgets_values)."""
    options = spec[1] if len(spec) > 1 else {}
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not options.get("forceInput")


def has_control_widget(name: str, spec: list) -> bool:
    """Whether the front end adds a "control after generate" widget (fixed / randomize …) after
    this one, which takes its own place in widgets_values. Front end 1.49 does it when the input
    asks for it, and for every INT input called seed or noise_seed that does not say otherwise."""
    control = (spec[1] if len(spec) > 1 else {}).get("control_after_generate")
    return bool(control) if control is not None else (spec[0] == "INT" and name in ("seed", "noise_seed"))


def workflow_to_prompt(workflow: dict, object_info: dict) -> dict:
    """A workflow as the front end saves it (nodes, links, widgets_values) -> the API prompt that
    the front end would POST to /prompt: widget values matched to input names in /object_info's
    input order, links as [source id, output slot], muted and front-end-only nodes left out."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) == MUTED:
            continue
        if node.get("mode", 0) == BYPASSED:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed; this converter does not reroute")
        if node["type"] not in object_info:
            raise KeyError(f"node {node['id']}: ComfyUI has no node type {node['type']!r}")
        info = object_info[node["type"]]
        linked = {}
        for socket_ in node.get("inputs", []):
            link = links.get(socket_.get("link"))
            if link is not None and nodes[link[1]].get("mode", 0) != MUTED:
                linked[socket_["name"]] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values") or [])
        inputs, position = {}, 0
        for group in ("required", "optional"):
            for name in info.get("input_order", {}).get(group, []):
                spec = info["input"][group][name]
                if is_widget(spec):
                    if position >= len(values):
                        raise ValueError(f"node {node['id']} ({node['type']}): no widget value for {name!r}")
                    inputs[name] = values[position]
                    position += 2 if has_control_widget(name, spec) else 1
                if name in linked:
                    inputs[name] = linked[name]
        if position != len(values):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values for {position} widgets")
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title", info["display_name"])}}
    return prompt


class WebSocket:
    """A blocking websocket client for ComfyUI's /ws and Chromium's DevTools (server frames are never masked)."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the websocket handshake")
            response += chunk
        head, self._buffer = response.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("websocket closed")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        self.sock.sendall(header + mask + masked)

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    def receive(self, timeout: float) -> tuple[str, bytes | str]:
        """The next message: ("text", str) or ("binary", bytes); answers pings on the way."""
        self.sock.settimeout(timeout)
        fragments, kind = b"", None
        while True:
            first, second = self._read(2)
            final, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(length)
            if opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                raise ConnectionError("the server closed the websocket")
            elif opcode in (0x0, 0x1, 0x2):  # a message may come in fragments: continuation frames
                kind = kind or ("text" if opcode == 0x1 else "binary")
                fragments += payload
                if final:
                    return kind, fragments.decode() if kind == "text" else fragments

    def close(self) -> None:
        self.sock.close()


@dataclass
class Run:
    """What the websocket showed for one prompt."""

    prompt_id: str
    events: list[dict] = field(default_factory=list)  # every JSON message about this prompt, in order
    binary_previews: int = 0
    history: dict = field(default_factory=dict)

    def of_type(self, kind: str) -> list[dict]:
        return [event["data"] for event in self.events if event["type"] == kind]

    @property
    def outcome(self) -> str:
        return next((event["type"] for event in reversed(self.events) if event["type"] in FINISHED), "unfinished")


class ComfyServer:
    """``main.py --cpu`` of a ComfyUI checkout on a free local port, everything under ``base``."""

    def __init__(self, comfyui: Path, python: str, base: Path):
        self.comfyui, self.python, self.base = comfyui, python, base
        self.port = free_port()
        self.log_path = base / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex
        self.ws: WebSocket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                 "--base-directory", str(self.base), "--disable-auto-launch", "--preview-method", "none"],
                cwd=self.comfyui, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()[-4000:]}")
        self.ws = WebSocket("127.0.0.1", self.port, f"/ws?clientId={self.client_id}")

    def stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """A new server process on the same folders (models, outputs and settings stay): what the old
        one held, memory included, goes back to the system."""
        self.stop()
        self.port = free_port()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                return json.loads(body) if body else {}  # /interrupt answers with an empty 200
        except urllib.error.HTTPError as error:  # /prompt answers 400 with the validation errors
            raise AssertionError(f"POST {path} -> {error.code}: {error.read().decode(errors='replace')}") from None

    def run(self, prompt: dict, timeout: float, on_event: Callable[[dict], None] | None = None) -> Run:
        """Queue ``prompt`` and collect its websocket messages until it succeeds, fails or is interrupted;
        ``on_event`` sees each of them as it arrives (to act mid-run, as a user would)."""
        queued = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if queued.get("node_errors"):  # ComfyUI runs the outputs that validate and skips the rest
            raise AssertionError(f"invalid nodes in the prompt: {json.dumps(queued['node_errors'])[:3000]}")
        run = Run(queued["prompt_id"])
        deadline = time.monotonic() + timeout
        while run.outcome == "unfinished":
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"prompt {run.prompt_id} still running after {timeout} s:\n{self.log()[-4000:]}")
            kind, message = self.ws.receive(left)
            if kind == "binary":
                run.binary_previews += 1
                continue
            event = json.loads(message)
            event["received"] = time.monotonic()
            data = event.get("data") or {}
            if data.get("prompt_id", run.prompt_id) == run.prompt_id and event["type"] != "status":
                run.events.append(event)
                if on_event is not None:
                    on_event(event)
        run.history = self.history(run.prompt_id) if run.outcome == "execution_success" else {}
        return run

    def history(self, prompt_id: str, timeout: float = 60) -> dict:
        """The prompt's /history entry: written just after the websocket reports success, so wait for it."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id, {})
            if "outputs" in entry or time.monotonic() > deadline:
                return entry
            time.sleep(0.2)
