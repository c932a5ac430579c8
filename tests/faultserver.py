"""A warm ``learnroot-run`` for fault-injection tests (tests/test_faults.py).

Run as ``python tests/faultserver.py``: it imports torch and learnroot once, then reads one JSON request
per line on stdin and answers one JSON line on stdout. Each request runs ``learnroot.cli.main(argv)`` in a
forked child (about a second instead of a new interpreter's five), with its stdout and stderr in files, and
optionally one fault injected at a chosen moment:

``fault = {"where": "write" | "hydra" | "fsync", "match": REGEX, "nth": N, "action": ACTION}``

``where`` names the function patched: ``write`` is :func:`learnroot.outputs._atomic_bytes` (every file of a
run folder but Hydra's and the log), ``hydra`` is Hydra's ``_save_config`` (``.hydra/*.yaml``), ``fsync`` is
:func:`os.fsync` (the output folder's space probe). At the ``nth`` call whose path matches ``REGEX`` the
child does ``ACTION``: ``enospc`` (raise ``OSError(ENOSPC)``, a full disk), ``kill`` (SIGKILL before the
write), ``kill-mid`` (write half of the data to the temporary file, then SIGKILL: a torn write),
``kill-after`` (SIGKILL once the file is in place), ``term`` / ``int`` (SIGTERM / SIGINT to itself before
the write). ``kill_after_s`` in a request SIGKILLs the child from outside after that many seconds (a
random moment). The answer: ``{"code": exit status (negative: killed by that signal), "stdout", "stderr"}``.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import sys
import tempfile
import time
import traceback

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402 - after OMP_NUM_THREADS

torch.set_num_threads(1)

import hydra.core.utils  # noqa: E402
from learnroot import cli, outputs  # noqa: E402, F401 - imported once, before any fork
from learnroot import runner  # noqa: E402, F401

SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}


def _act(action: str, path: str, data: bytes | None) -> None:
    if action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device", path)
    if action == "kill-mid" and data is not None:
        handle, _ = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.write(handle, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    if action in SIGNALS:
        os.kill(os.getpid(), SIGNALS[action])


def install(fault: dict) -> None:
    """Patch the function ``fault["where"]`` names so that its ``nth`` matching call does ``fault["action"]``."""
    pattern, nth, action = re.compile(fault.get("match", "")), int(fault.get("nth", 1)), fault["action"]
    calls = [0]

    def due(path) -> bool:
        if pattern.search(str(path)):
            calls[0] += 1
            return calls[0] == nth
        return False

    where = fault.get("where", "write")
    if where == "write":
        original = outputs._atomic_bytes

        def atomic_bytes(path, data):
            hit = due(path)
            if hit and action != "kill-after":
                _act(action, str(path), data)
            original(path, data)
            if hit and action == "kill-after":
                os.kill(os.getpid(), signal.SIGKILL)
        outputs._atomic_bytes = atomic_bytes
    elif where == "hydra":
        save = hydra.core.utils._save_config

        def save_config(cfg, filename, output_dir):
            if due(os.path.join(str(output_dir), filename)):
                _act(action, os.path.join(str(output_dir), filename), None)
            return save(cfg, filename, output_dir)
        hydra.core.utils._save_config = save_config
    elif where == "fsync":
        fsync = os.fsync

        def checked_fsync(fd):
            if due("fsync"):
                _act(action, "fsync", None)
            return fsync(fd)
        os.fsync = checked_fsync
    else:
        raise ValueError(f"unknown fault place {where!r}")


def child(request: dict) -> None:
    """Run one request in this (forked) process and leave with its exit status."""
    code = 0
    try:
        os.chdir(request["cwd"])
        os.environ.update(request.get("env", {}))
        for fd, name in ((1, "stdout"), (2, "stderr")):
            handle = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if request.get("fault"):
            install(request["fault"])
        sys.argv = ["learnroot-run", *request["argv"]]
        cli.main(request["argv"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported through the exit status and stderr
        traceback.print_exc()
        code = 99
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
    os._exit(code)


def serve(request: dict) -> dict:
    folder = tempfile.mkdtemp(prefix="faultserver-")
    request = {**request, "stdout": os.path.join(folder, "stdout"), "stderr": os.path.join(folder, "stderr")}
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(request)
    deadline = time.monotonic() + float(request.get("timeout_s", 300))
    kill_at = time.monotonic() + float(request["kill_after_s"]) if "kill_after_s" in request else None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        now = time.monotonic()
        if (kill_at is not None and now >= kill_at) or now >= deadline:
            os.kill(pid, signal.SIGKILL)
            kill_at = None
            deadline = float("inf")
        time.sleep(0.005)
    with open(request["stdout"], errors="replace") as out, open(request["stderr"], errors="replace") as err:
        answer = {"code": os.waitstatus_to_exitcode(status), "stdout": out.read(), "stderr": err.read()}
    for name in ("stdout", "stderr"):
        os.unlink(request[name])
    os.rmdir(folder)
    return answer


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(serve(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
