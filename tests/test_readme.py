"""The README's snippets run as written, against a real etcd, so they cannot drift.

For whoever adds a snippet: each ```python block of README.md is a complete program whose first
line is a comment naming its file, ``# name.py: what it shows``. They are all written to one
directory and run with ``$GRPC_ETCD_ENDPOINTS`` naming a fresh etcd:

- ``server*.py`` run as servers, twice (``python server.py v1`` and ``... v2``); each prints one
  line once it is registered, and exits 0 on SIGTERM within ``SERVER_STOP`` seconds;
- ``secure*.py`` run against an etcd with user ``app`` (password in ``$GRPC_ETCD_PASSWORD``) and
  mutual TLS, with ``ca.crt``, ``client.crt`` and ``client.key`` in the directory;
- ``test_*.py`` run with pytest;
- every other one runs once the servers are up, and must exit 0 within ``PROGRAM_TIMEOUT``.
``EXPECTED`` lists what some of them must print.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import grpc_etcd.errors
from grpc_etcd.testing import EtcdServer, TLSUnavailableError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROGRAM_TIMEOUT = 60.0
SERVER_START = 30.0
SERVER_STOP = 15.0
SERVER_VERSIONS = ("v1", "v2")

EXPECTED: dict[str, list[str]] = {
    "client.py": [
        "v1 answered 'hi' (asked: v1)",
        "v2 answered 'hi' (asked: v2)",
        "UNAVAILABLE no match found conn",
    ],
    "client_aio.py": ["v2 answered 'hi' (asked: v2)"],
    "secure_client.py": ["[]"],
    "unreachable.py": ["EtcdUnavailableError"],
}

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NAME = re.compile(r"# ([\w.-]+\.py)\b")


def _snippets() -> dict[str, str]:
    found: dict[str, str] = {}
    for block in _BLOCK.findall(README.read_text()):
        match = _NAME.match(block)
        name = match[1] if match else f"<unnamed snippet {len(found) + 1}>"
        found[name if name not in found else f"{name} <again>"] = block
    return found


SNIPPETS = _snippets()
PROGRAMS = sorted(
    name
    for name in SNIPPETS
    if name.endswith(".py") and not name.startswith(("server", "secure", "test_"))
)


def test_every_snippet_is_named_once() -> None:
    assert SNIPPETS, "no python snippet found in README.md"
    bad = [name for name in SNIPPETS if not name.endswith(".py")]
    assert not bad, f"README snippets must start with '# name.py' and be named once: {bad}"
    assert set(EXPECTED) <= set(SNIPPETS), "EXPECTED names a snippet the README no longer has"


@dataclass
class Site:
    """The directory the snippets are in, and the environment to run them with."""

    directory: Path
    env: dict[str, str]


def _write_snippets(directory: Path) -> None:
    for name, text in SNIPPETS.items():
        (directory / name).write_text(text)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A plain etcd with the README's servers registered in it (stopped at the end)."""
    directory = tmp_path_factory.mktemp("readme")
    _write_snippets(directory)
    with EtcdServer() as etcd:
        env = dict(os.environ, GRPC_ETCD_ENDPOINTS=etcd.endpoint, PYTHONUNBUFFERED="1")
        env.pop("GRPC_ETCD_PASSWORD", None)
        servers: list[tuple[str, subprocess.Popen[str]]] = []
        try:
            for name in sorted(n for n in SNIPPETS if n.startswith("server")):
                for version in SERVER_VERSIONS:
                    proc = subprocess.Popen(
                        [sys.executable, name, version],
                        cwd=directory,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    servers.append((f"{name} {version}", proc))
            for label, proc in servers:
                _wait_for_first_line(label, proc)
            yield Site(directory, env)
        finally:
            codes = {label: _stop(proc) for label, proc in servers}
        assert all(code == 0 for code in codes.values()), f"servers' exit codes: {codes}"


def _wait_for_first_line(label: str, proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    try:
        line = _readline_within(proc, SERVER_START)
    except TimeoutError:
        raise AssertionError(f"{label} printed nothing within {SERVER_START} s") from None
    if not line:
        _, err = proc.communicate(timeout=SERVER_STOP)
        raise AssertionError(f"{label} exited ({proc.returncode}) before serving:\n{err}")


def _readline_within(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError
    return proc.stdout.readline()


def _stop(proc: subprocess.Popen[str]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=SERVER_STOP)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return proc.returncode


def _run(site: Site, *command: str) -> str:
    result = subprocess.run(
        command,
        cwd=site.directory,
        env=site.env,
        capture_output=True,
        text=True,
        timeout=PROGRAM_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_snippet_runs_as_written(site: Site, name: str) -> None:
    out = _run(site, sys.executable, name)
    for expected in EXPECTED.get(name, []):
        assert expected in out, f"{name} should print {expected!r}; it printed:\n{out}"


#: The README's pytest config (a ```toml block starting ``# pyproject.toml``), written next to
#: the test snippets as a user would.
PYTEST_CONFIG = re.findall(r"^```toml\n(# pyproject\.toml.*?)^```", README.read_text(), re.M | re.S)


@pytest.mark.parametrize("name", sorted(n for n in SNIPPETS if n.startswith("test_")))
def test_test_snippet_passes_under_pytest(tmp_path: Path, name: str) -> None:
    """Run outside the repository (its pyproject.toml out of reach), warnings are errors: the
    README's snippet and config alone must make pytest (and pytest-asyncio) content."""
    (tmp_path / name).write_text(SNIPPETS[name])
    (tmp_path / "pyproject.toml").write_text("".join(PYTEST_CONFIG))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", name]
    out = _run(Site(tmp_path, env), *command)
    assert "warning" not in out.lower(), out


@pytest.mark.parametrize("name", sorted(n for n in SNIPPETS if n.startswith("secure")))
def test_secure_snippet_reaches_etcd_with_a_user_and_mutual_tls(tmp_path: Path, name: str) -> None:
    try:
        etcd = EtcdServer(auth=("app", "s3cret"), tls="mutual")
        etcd.start()
    except TLSUnavailableError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no TLS here: {exc}")
    with etcd:
        assert etcd.ca_file and etcd.client_cert_file and etcd.client_key_file
        for source, target in (
            (etcd.ca_file, "ca.crt"),
            (etcd.client_cert_file, "client.crt"),
            (etcd.client_key_file, "client.key"),
        ):
            shutil.copy(source, tmp_path / target)
        (tmp_path / name).write_text(SNIPPETS[name])
        env = dict(os.environ, GRPC_ETCD_ENDPOINTS=etcd.url, GRPC_ETCD_PASSWORD="s3cret")
        out = _run(Site(tmp_path, env), sys.executable, name)
    for expected in EXPECTED.get(name, []):
        assert expected in out


def test_the_errors_the_readme_names_exist() -> None:
    section = README.read_text().split("## Errors you catch", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+Error)`", section)) - {"ValueError", "RpcError"}
    assert named, "the errors section names no exception"
    missing = sorted(n for n in named if not hasattr(grpc_etcd.errors, n))
    assert not missing, f"README names errors grpc_etcd.errors does not have: {missing}"


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize(
    "page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_docs_link_only_inside_the_repo(page: Path) -> None:
    for target in _LINK.findall(page.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue  # a web page, not a file
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name} links outside the repo: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"


def test_users_are_pointed_at_docs_routing_md() -> None:
    """The spec ROUTING.md is not shipped: pages, docstrings and ``--help`` name docs/routing.md."""
    from click.testing import CliRunner

    from grpc_etcd.cli import main

    pages = [README, *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py")]
    pages += list((ROOT / "examples").glob("*.py"))
    naming = [str(p.relative_to(ROOT)) for p in pages if "ROUTING.md" in p.read_text()]
    assert not naming, f"these name ROUTING.md, which users do not have: {naming}"
    helped = CliRunner().invoke(main, ["config", "--help"])
    assert helped.exit_code == 0 and "docs/routing.md" in helped.output


def test_the_readme_says_how_to_install_and_what_each_extra_is_for() -> None:
    """Issue 13: outside the Makefile's .venv, ``python server.py v1`` found no ``grpc``."""
    import tomllib

    section = README.read_text().split("## Installing into your own environment", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert "pip install -e '.[etcd]'" in section and "source .venv/bin/activate" in section
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", section, re.MULTILINE))
    assert set(rows) == set(extras["optional-dependencies"]), rows
    assert "grpc-etcd top" in rows["cli"] and "grpc-etcd xds" in rows["xds"]
