"""ServerProcess: `loragen serve` in a subprocess on a free loopback port, returned once /readyz answers 200 (what the
tests and benchmarks/serve_load.py drive, and a script can too)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`loragen serve --generator GENERATOR --port P *args`, its output in `log`; `url` once it is ready."""

    def __init__(self, generator: str | Path, log: str | Path, *args: str, env: dict | None = None, ready_s: float = 120.0):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w+")
        cmd = [sys.executable, "-c", "from loragen.cli import app; app()", "serve", "--generator", str(generator),
               "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + ready_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the server was not ready within {ready_s:.0f} s: {self.output()}")

    def output(self) -> str:
        """The last 3,000 characters the server wrote."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()
