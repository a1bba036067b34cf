"""A real headless Chromium, driven over the DevTools protocol, for tests of HTML pages.

:class:`Chromium` starts Debian's ``chromium`` with the flags that keep it from reaching
anything by itself (no sandbox for root in a container, no GPU, no QUIC, no first-run, no
background networking, component updates or sync, a throw-away profile, and a proxy that
leads nowhere, so that any request a page makes fails instead of leaving the machine).
:meth:`Chromium.open` loads a page and records what a person would never see: uncaught
exceptions, ``console.error``/``warn`` calls, the browser's own error log entries and every
request to something other than ``file:`` or ``data:``. ``evaluate`` runs JavaScript in the
page; ``screenshot`` writes a PNG of the whole page. The websocket client is
``websocket-client`` (in the lock, through the kubernetes client).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

__all__ = ["CHROMIUM", "Chromium", "Page"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
         "--remote-debugging-port=0"]
DEADLINE = 60.0


@dataclass
class Page:
    """One loaded page and what happened while it loaded."""

    socket: websocket.WebSocket
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _next: int = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._note(message)
        raise AssertionError(f"{method}: no answer within {DEADLINE:g}s")

    def wait_for(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            self._note(message)
            if message.get("method") == event:
                params: dict[str, Any] = message.get("params", {})
                return params
        raise AssertionError(f"no {event} within {DEADLINE:g}s")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        done = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                         awaitPromise=True)
        if "exceptionDetails" in done:
            raise AssertionError(f"{expression}: {done['exceptionDetails']}")
        return done["result"].get("value")

    def screenshot(self, dest: Path) -> Path:
        """The whole page (not only the window) as a PNG."""
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        dest.write_bytes(base64.b64decode(shot["data"]))
        return dest

    def _note(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.problems.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning",
                                                                           "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in
                            params.get("args", []))
            self.problems.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            entry = params["entry"]
            self.problems.append(f"log {entry['level']}: {entry['text']} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                self.requests.append(url)


class Chromium:
    """A headless Chromium process with a throw-away profile (a context manager)."""

    def __init__(self) -> None:
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed")
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Chromium:
        profile = Path(self._profile.name)
        assert CHROMIUM is not None
        self._proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + DEADLINE
        while not (active.exists() and active.read_text().count("\n") >= 1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {self._proc.poll()})")
            time.sleep(0.05)
        self.port = int(active.read_text().split("\n")[0])
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=20)
        self._profile.cleanup()

    @contextmanager
    def open(self, url: str, *, width: int = 1280, height: int = 900) -> Iterator[Page]:
        """Load ``url`` in a new tab and yield it once its load event fired."""
        browser = self._socket("/devtools/browser")
        try:
            target = Page(browser).call("Target.createTarget", url="about:blank")["targetId"]
        finally:
            browser.close()
        page = Page(self._socket(f"/devtools/page/{target}"))
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                page.call(f"{domain}.enable")
            page.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
            page.call("Page.navigate", url=url)
            page.wait_for("Page.loadEventFired")
            page.evaluate("new Promise(done => setTimeout(done, 100))")  # late errors
            yield page
        finally:
            page.socket.close()

    def _socket(self, path: str) -> websocket.WebSocket:
        if path == "/devtools/browser":
            # the browser's own endpoint, as the profile names it
            active = Path(self._profile.name) / "DevToolsActivePort"
            path = active.read_text().split("\n")[1].strip()
        return websocket.create_connection(f"ws://127.0.0.1:{self.port}{path}",
                                           timeout=DEADLINE, suppress_origin=True)
