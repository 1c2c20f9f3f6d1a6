"""A headless Chromium driven over the DevTools protocol, for tests of ComfyUI's real front end.

Standard library only (plus the websocket client of comfy_server.py): the browser comes from the
distribution's packages (chromium, or chromium-headless-shell), found on PATH or named by $CHROMIUM.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from comfy_server import WebSocket

BROWSER_NAMES = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    named = os.environ.get("CHROMIUM")
    if named:
        return named if Path(named).is_file() else shutil.which(named)
    return next((shutil.which(name) for name in BROWSER_NAMES if shutil.which(name)), None)


class JavaScriptError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page; ``errors`` collects the page's uncaught exceptions and
    console errors (text and source URL) as they arrive."""

    def __init__(self, binary: str, profile: Path, width: int = 1600, height: int = 1000):
        profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its own process group: distributions start it through a wrapper script
        self.errors: list[dict] = []
        self._next_id = 0
        self.ws: WebSocket | None = None
        try:
            port = self._devtools_port(timeout=60)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
                page = next(target for target in json.loads(response.read()) if target["type"] == "page")
            address = urlparse(page["webSocketDebuggerUrl"])
            self.ws = WebSocket(address.hostname, address.port, address.path, timeout=60)
            self.call("Runtime.enable")
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if found:
                return int(found.group(1))
        raise RuntimeError("Chromium did not open its DevTools port:\n" + "".join(seen)[-3000:])

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the whole process group: the wrapper's child, its zygotes and renderers too."""
        if self.ws is not None:
            self.ws.close()
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group(self, number: int) -> None:
        try:
            os.killpg(self.process.pid, number)
        except ProcessLookupError:  # everything in it has exited already
            pass

    def call(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        """Send one DevTools command and return its result, noting page errors that arrive meanwhile."""
        self._next_id += 1
        self.ws.send_text(json.dumps({"id": self._next_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method} got no answer within {timeout} s")
            message = json.loads(self.ws.receive(left)[1])
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._note(message)

    def _note(self, message: dict) -> None:
        params = message.get("params", {})
        if message.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.errors.append({"text": text, "url": details.get("url", "")})
        elif message.get("method") == "Runtime.consoleAPICalled" and params.get("type") == "error":
            frames = params.get("stackTrace", {}).get("callFrames", [])
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            self.errors.append({"text": text, "url": " ".join(frame["url"] for frame in frames)})

    def evaluate(self, expression: str, timeout: float = 60):
        """Run JavaScript in the page (promises awaited) and return its JSON-serialisable value."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True, "timeout": int(timeout * 1000)},
                           timeout=timeout + 10)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise JavaScriptError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"}, timeout=120)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
