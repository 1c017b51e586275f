"""Run every benchmark in sequence and print the machine they ran on (``make bench``).

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME ...] [--log FILE]

Runs pick_cost.py, channel_throughput.py, cpu_per_call.py, channel_idle_cpu.py, slow_node.py,
update_latency.py and fleet.py one after the other with this interpreter (``--quick`` is passed
through to each), prints each script's output as it comes, and before the first one prints the
machine: core count, CPU model, Python, grpcio, protobuf and etcd versions, and the load
average; the load average is printed again after each script (the machine may be shared: read
the numbers with it in mind). Exits non-zero if any script failed; every script runs under a
time limit.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "pick_cost.py",
    "channel_throughput.py",
    "cpu_per_call.py",
    "channel_idle_cpu.py",
    "slow_node.py",
    "update_latency.py",
    "fleet.py",
)
TIME_LIMIT = 900.0  # seconds per script


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def _etcd_version() -> str:
    try:
        from grpc_etcd.testing import etcd_version, find_etcd

        return f"{etcd_version()} ({find_etcd()})"
    except Exception as exc:  # the report must still print
        return f"unknown ({exc})"


def machine_lines() -> list[str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"nproc: {usable if usable is not None else os.cpu_count()} "
        f"(os.cpu_count() {os.cpu_count()})",
        f"cpu: {_cpu_model()}",
        f"kernel: {platform.system()} {platform.release()} {platform.machine()}",
        f"python: {platform.python_version()} ({sys.executable})",
        f"grpcio: {_version('grpcio')}, protobuf: {_version('protobuf')}, "
        f"grpc-etcd: {_version('grpc-etcd')}",
        f"etcd: {_etcd_version()}",
        f"load average (1/5/15 min) before: {_load()}",
    ]


class Tee:
    """Print to stdout and, if given, to a log file."""

    def __init__(self, log: TextIO | None) -> None:
        self._log = log

    def __call__(self, text: str = "", end: str = "\n") -> None:
        sys.stdout.write(text + end)
        sys.stdout.flush()
        if self._log is not None:
            self._log.write(text + end)
            self._log.flush()


def run_script(name: str, quick: bool, out: Tee) -> bool:
    command = [sys.executable, str(HERE / name), *(["--quick"] if quick else [])]
    shown = " ".join(["python", f"benchmarks/{name}", *(["--quick"] if quick else [])])
    out(f"\n## {name}\n")
    out(f"`{shown}` (load average before: {_load()})\n")
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        cwd=HERE.parent,
    )
    assert process.stdout is not None
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        process.kill()

    timer = threading.Timer(TIME_LIMIT, kill)  # a script that hangs silently is stopped too
    timer.start()
    try:
        for line in process.stdout:  # ends when the script exits (or is killed)
            out(line, end="")
        code = process.wait()
    finally:
        timer.cancel()
    timed_out = killed.is_set()
    elapsed = time.monotonic() - started
    status = "timed out" if timed_out else ("ok" if code == 0 else f"exit code {code}")
    out(f"\n_{name}: {status} in {elapsed:.0f} s; load average after: {_load()}_")
    return code == 0 and not timed_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    parser.add_argument("--log", type=Path, help="also write everything printed to this file")
    args = parser.parse_args()

    log = args.log.open("w") if args.log else None
    try:
        out = Tee(log)
        out("# grpc-etcd benchmarks" + (" (--quick)" if args.quick else ""))
        out()
        for line in machine_lines():
            out(f"- {line}")
        started = time.monotonic()
        failed = [name for name in (args.only or SCRIPTS) if not run_script(name, args.quick, out)]
        out(
            f"\nall done in {time.monotonic() - started:.0f} s; "
            f"load average after: {_load()}" + (f"; FAILED: {', '.join(failed)}" if failed else "")
        )
    finally:
        if log is not None:
            log.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
