"""Policy servers for the service tests: `w0sim serve` and carla-driver-interface's own `serve`, each a process of its
own on loopback TCP or a Unix socket, stopped after the test."""
from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120


class Server:
    """A policy server process and the address its clients dial."""

    def __init__(self, command: list[str], ready: str, address: str | None = None):
        self.command, self.lines = command, queue.Queue()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()
        self.output: list[str] = []
        self.address = address
        while True:
            try:
                line = self.lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"{command} printed nothing for {START_TIMEOUT_S} s; so far: {self.output}") from None
            if line is None:
                raise RuntimeError(f"{command} ended before it served: {''.join(self.output)}")
            self.output.append(line)
            found = re.search(ready, line)
            if found:
                self.address = address or found.group(1)
                return

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def kill(self) -> None:
        """SIGKILL: the server dies mid-call, as a crashed one does."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def w0sim_server(agent: str, host: str = "localhost", port: int = 0, *extra: str) -> Server:
    """`w0sim serve --agent AGENT`; the address it prints."""
    return Server([str(BIN / "w0sim"), "serve", "--agent", agent, "--host", host, "--port", str(port), *extra],
                  r"serving \S+ on (\S+) \(")


def package_server(policy: str, port: int) -> Server:
    """carla-driver-interface's own `serve --policy POLICY` on localhost:PORT."""
    return Server([str(BIN / "carla-driver-interface"), "serve", "--policy", policy, "--host", "localhost", "--port",
                   str(port)], r"(serving)", f"localhost:{port}")


@pytest.fixture
def servers():
    """Start servers with `start(factory, *args)`; every one is stopped after the test."""
    started: list[Server] = []

    def start(factory, *args) -> Server:
        server = factory(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
