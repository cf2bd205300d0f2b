"""A real `spine-cds serve` (gunicorn, 2 workers) in a subprocess, for the hardening tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from .support import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    def __init__(self, data_dir: Path, env: dict | None = None, workers: int = 2, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.workers = workers
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_CDS_")}
        self.env.update({"SPINE_CDS_DATA_DIR": str(data_dir), **(env or {})})
        self.log_path = log or data_dir / "server.log"
        self.process = None
        self.start()

    def start(self) -> None:
        self.log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--workers", str(self.workers)],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                healthy = requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                healthy = False
            if healthy and len(self.workers_pids()) == self.workers:  # every worker booted
                return
            time.sleep(0.1)
        raise RuntimeError("server not ready in 60 s")

    def workers_pids(self) -> list[int]:
        pid = self.process.pid
        try:
            return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text()
