"""Supervise the demo's and e2e test's child processes: start, wait until healthy, stop.

Why a module of its own: the demo, the e2e test and the benchmarks all run the same set of
long-lived processes (controller, provisioner, KubeRay stand-in, Prometheus) and need the same
three things from each: its output in a log file a person can read, a readiness wait that fails
with the log's tail instead of hanging, and a clean stop (SIGTERM, then SIGKILL after a grace).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except OSError:
        return False


@dataclass
class ManagedProcess:
    """One child process with its log file; ``wait_until`` fails fast if the child dies."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,
        )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def wait_until(self, probe: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if probe():
                return
            if not self.running:
                code = self.proc.returncode if self.proc else None
                raise RuntimeError(f"{self.name} exited ({code}):\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not {what} within {timeout:.0f}s:\n{self.log_tail()}")

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        self.wait_until(lambda: http_ok(url), timeout, f"answering {url}")

    def stop(self, grace: float = 15.0) -> None:
        if not self.running:
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, for chaos tests."""
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
