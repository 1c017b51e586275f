"""The parts of the xDS tests: named servers, the control plane and unmodified clients, each
client in its own process (gRPC reads the xDS bootstrap once per process).

The control plane runs as ``grpc-etcd xds`` in a subprocess, so a test can kill and restart it;
the answering servers live in the test process (which never dials xDS itself).
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from grpc_etcd.xds import bootstrap_json
from grpc_etcd.xds._protos import AdsStub, DiscoveryRequest

HERE = Path(__file__).parent
GRPC_JS = "@grpc/grpc-js@1"
GRPC_JS_XDS = "@grpc/grpc-js-xds@1"
NPM_PACKAGES = (GRPC_JS, GRPC_JS_XDS)
#: Quiet, and without a registry failing well within the time limit (the tests then skip).
NPM_OPTIONS = ("--no-audit", "--no-fund", "--fetch-retries=1", "--fetch-timeout=20000")
CLIENT_KINDS = ["grpcio", "grpc-js"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_line(process: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The next stdout line of ``process`` within ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no answer from {what} within {timeout:.1f}s")
    line = process.stdout.readline()
    if not line:
        raise AssertionError(f"{what} exited (status {process.poll()})")
    return line


# ---------------------------------------------------------------- answering servers


class Servers:
    """Named grpc servers answering ``/proto.Api/ApiTest`` with ``<name>|<x-version seen>``."""

    def __init__(self) -> None:
        self._servers: list[grpc.Server] = []
        self._by_address: dict[str, grpc.Server] = {}

    def start(self, name: str) -> str:
        """Start server ``name``; return its address."""

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            seen = dict(context.invocation_metadata()).get("x-version", "")
            text = f"{name}|{seen}".encode()
            return b"\n" + bytes([len(text)]) + text

        handler = grpc.method_handlers_generic_handler(
            "proto.Api", {"ApiTest": grpc.unary_unary_rpc_method_handler(answer)}
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._servers.append(server)
        self._by_address[f"127.0.0.1:{port}"] = server
        return f"127.0.0.1:{port}"

    def stop(self, address: str) -> None:
        """Stop the server at ``address`` (its connections close at once)."""
        self._by_address.pop(address).stop(None)

    def close(self) -> None:
        for server in self._servers:
            server.stop(None)


# ---------------------------------------------------------------- the control plane

QUIET = 0.5  # how long "nothing is sent" is watched for


class Ads:
    """One raw ADS stream, as a client would hold it."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.call: Any = AdsStub(self.channel).StreamAggregatedResources()
        self.nonces: dict[str, str] = {}
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read_all())

    async def _read_all(self) -> None:
        async for response in self.call:
            await self.responses.put(response)

    async def ask(self, type_url: str, *names: str) -> None:
        request = DiscoveryRequest(
            type_url=type_url, resource_names=names, response_nonce=self.nonces.get(type_url, "")
        )
        request.node.id = "test"
        await self.call.write(request)

    async def read(self, timeout: float = 10.0) -> Any:
        response = await asyncio.wait_for(self.responses.get(), timeout)
        self.nonces[response.type_url] = response.nonce
        return response

    async def ack(self, response: Any, *names: str) -> None:
        request = DiscoveryRequest(
            type_url=response.type_url,
            resource_names=names,
            response_nonce=response.nonce,
            version_info=response.version_info,
        )
        await self.call.write(request)

    async def nothing(self) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await self.read(QUIET)

    async def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        await self.channel.close()


class PlaneProcess:
    """``grpc-etcd xds`` in a subprocess on a fixed port (so a restart reuses it)."""

    def __init__(
        self,
        etcd: str,
        log: Path,
        options: tuple[str, ...] = (),
        etcd_options: tuple[str, ...] = (),
    ) -> None:
        self.etcd = etcd
        self.options = options  # more ``xds`` options: --cert, --key, --cacert
        self.etcd_options = etcd_options  # grpc-etcd's own, before ``xds``: --user, --password
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = log
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "grpc_etcd.cli", "--etcd", self.etcd, "-v"]
        command += self.etcd_options
        command += ["xds", "--listen", self.address, *self.options]
        with self._log.open("a") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        line = _read_line(self.process, 15.0, "grpc-etcd xds")
        assert "listening on" in line, line

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def ensure_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            self.start()


# ---------------------------------------------------------------- clients


class Client:
    """One unmodified client process (grpcio or grpc-js) that runs batches of calls."""

    def __init__(self, kind: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.kind = kind
        with log.open("a") as stderr:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        json.loads(_read_line(self.process, 20.0, f"{kind} client"))

    def calls(
        self,
        service: str,
        count: int = 1,
        *,
        version: str | None = None,
        metadata: list[tuple[str, str]] | None = None,
        timeout: float = 2.0,
    ) -> dict[str, Any]:
        """Make ``count`` calls to ``xds:///service``; ``{"answers": {..}, "errors": {..}}``."""
        pairs = list(metadata or [])
        if version is not None:
            pairs.append(("x-version", version))
        command = {
            "target": f"xds:///{service}",
            "calls": count,
            "metadata": pairs,
            "timeout": timeout,
        }
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return dict(json.loads(_read_line(self.process, timeout * count + 10, self.kind)))

    def until(
        self,
        service: str,
        check: Callable[[dict[str, Any]], bool],
        *,
        within: float,
        what: str,
        batch: int = 5,
        **kwargs: Any,
    ) -> float:
        """Call in small batches until ``check(result)`` holds; return the seconds it took."""
        start = time.monotonic()
        last: dict[str, Any] = {}
        while time.monotonic() - start < within:
            last = self.calls(service, batch, timeout=1.0, **kwargs)
            if check(last):
                return time.monotonic() - start
        raise AssertionError(f"{self.kind}: not {what} within {within}s; last: {last}")

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def npm_prefix(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where grpc-js is installed: pytest's cache (once for every run), else a temp dir."""
    cache = getattr(config, "cache", None)  # none with -p no:cacheprovider
    if cache is not None:
        return Path(cache.mkdir("grpc-js-xds"))
    return tmp_path_factory.mktemp("grpc-js-xds")


def node_modules(prefix: Path) -> Path:
    """``node_modules`` with grpc-js and grpc-js-xds under ``prefix``, installed if missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("grpc-js clients need node and npm on PATH")
    modules = prefix / "node_modules"
    if not (modules / "@grpc" / "grpc-js-xds" / "package.json").exists():
        try:
            subprocess.run(
                ["npm", "install", *NPM_OPTIONS, "--prefix", str(prefix), *NPM_PACKAGES],
                check=True,
                capture_output=True,
                text=True,
                timeout=180,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            pytest.skip(f"cannot npm install {GRPC_JS_XDS}: {detail.strip()[-300:]}")
    return modules


def client_command(
    kind: str,
    plane_address: str,
    npm: Path,
    source: dict[str, str] | None = None,
    zone: str = "test",
    **tls: str,
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of an unmodified ``kind`` client of the control plane,
    with the caller's labels ``source`` and its locality ``zone`` in its bootstrap (and
    ``cacert``, ``cert``, ``key`` for a control plane that serves TLS)."""
    bootstrap = bootstrap_json(plane_address, zone=zone, source=source, **tls)
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": bootstrap}
    if kind == "grpcio":
        return [sys.executable, str(HERE / "xds_client.py")], env
    env["NODE_PATH"] = str(node_modules(npm))
    return ["node", str(HERE / "xds_client.js")], env
