"""A headless Chromium driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``), with
the standard library only: open a page, collect console errors, evaluate JavaScript, take a screenshot.

Used by ``tests/test_report.py`` (skipped when :data:`CHROMIUM` is absent) and
``scripts/bench_report.py``. Debian: ``apt-get install chromium``.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

CHROMIUM = Path(os.environ.get("LEARNROOT_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe")


def _high(fd: int) -> int:
    """``fd`` moved to a number of at least 10 (closed on exec)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class BrowserError(Exception):
    """Chromium failed, answered with an error, or timed out."""


class Browser:
    """One headless Chromium with one page; use as a context manager.

    Attributes
    ----------
    errors : list of str
        Console errors, uncaught exceptions and failed loads seen so far.
    """

    def __init__(self, binary: Path = CHROMIUM, timeout: float = 60.0, width: int = 1280, height: int = 900):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="learnroot-chromium-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # the pipe ends Chromium expects as fds 3 (commands) and 4 (answers): copied above 9 first, so that
        # the two dup2 calls in the child cannot overwrite one another
        to_browser, from_browser = _high(to_browser), _high(from_browser)
        command = [str(binary), *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
                   "about:blank"]
        self.log = Path(self.profile) / "chromium.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, close_fds=False, stdout=subprocess.DEVNULL, stderr=log,
                                            preexec_fn=lambda: (os.dup2(to_browser, 3), os.dup2(from_browser, 4)))
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._id, self.errors, self._events = b"", 0, [], []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)

    # --------------------------------------------------------------------------------- protocol
    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("no answer from Chromium in time")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:] if self.log.exists() else []
                raise BrowserError("Chromium closed the pipe: " + " | ".join(tail))
            self._buffer += chunk
        text, _, self._buffer = self._buffer.partition(b"\0")
        message = json.loads(text)
        if "method" in message:
            self._event(message)
        return message

    def _event(self, message: dict) -> None:
        self._events.append(message)
        params, method = message.get("params", {}), message["method"]
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + str(details.get("exception", {}).get("description") or details))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(arg.get("value", arg.get("description")))
                                                      for arg in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())

    def call(self, method: str, params: Optional[dict] = None, session: bool = False) -> dict:
        """Send one command and wait for its answer (events that arrive meanwhile are recorded)."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})

    def wait_for(self, method: str, timeout: Optional[float] = None) -> dict:
        """Wait for an event of the page's session (one recorded earlier counts)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for index, event in enumerate(self._events):
                if event["method"] == method:
                    return self._events.pop(index)
            self._message(deadline)

    # --------------------------------------------------------------------------------- page
    def open(self, path: Path) -> float:
        """Load a file and wait for its load event; returns the seconds from navigation to the event."""
        self._events.clear()
        started = time.monotonic()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=True)
        self.wait_for("Page.loadEventFired")
        return time.monotonic() - started

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:60]}...: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        """Write a PNG of the viewport (or of the whole page)."""
        params = {"format": "png", "captureBeyondViewport": full_page}
        data = self.call("Page.captureScreenshot", params, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
