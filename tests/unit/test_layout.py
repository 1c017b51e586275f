"""The layers import downward only, and the public names survive every import order."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import grpc_etcd

SRC = Path(grpc_etcd.__file__).parent

# The pure core: no I/O, no threads, no event loop.
PURE = [
    "config.py",
    "_words.py",
    "_strict_json.py",
    "checks.py",
    "rules.py",
    "outlier.py",
    "retry.py",
    "xds/translate.py",
    "node.py",
    "record.py",
    "registry/acl.py",
    "naming.py",
    "snapshot.py",
    "clients.py",
    "routing.py",
    "backoff.py",
    "errors.py",
    "allowlist.py",
    "registry/etcd/_cursor.py",
    "registry/etcd/_endpoints.py",
    "registry/etcd/_outcomes.py",
    "policies",
    "_channel/_call.py",
    "_channel/_flow.py",
]
FORBIDDEN_IN_PURE = {"grpc", "asyncio", "threading"}


def _modules(entry: str) -> list[Path]:
    path = SRC / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return parts if path.name == "__init__.py" else parts[:-1]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute and dotted (relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _pure_modules() -> list[Path]:
    return [m for entry in PURE for m in _modules(entry)]


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_pure_modules_import_no_io(path: Path) -> None:
    roots = {name.split(".")[0] for name in _imports(path)}
    assert not roots & FORBIDDEN_IN_PURE, f"{path.name} imports {roots & FORBIDDEN_IN_PURE}"


# Pure modules whose tests live in another pure module's test module, and why.
TESTED_ELSEWHERE = {
    "policies/random.py": "test_policies.py runs its distributions with version's and wrr's",
    "policies/round_robin.py": "test_policies.py runs its distribution with random's",
    "policies/_stateless.py": "the half pick_first, round_robin and wrr share: tested as those",
}


def _test_names(path: Path) -> tuple[str, ...]:
    """The names a pure module's test module may have: ``test_<module>.py``, or with its
    package in front (``_channel/_call.py``: ``test_channel_call.py``); a package's
    ``__init__.py`` is the package itself (``test_policies.py``)."""
    parts = [part.strip("_") for part in path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "init":
        return (f"test_{parts[-2]}.py",)
    names = [f"test_{parts[-1]}.py"]
    if len(parts) > 1:
        names.append(f"test_{parts[-2]}_{parts[-1]}.py")
    return tuple(names)


def test_each_pure_module_has_a_test_module_of_its_own() -> None:
    """Unit tests laid out like src/ (issue 12): tests/unit/test_<module>.py per pure module."""
    unit = Path(__file__).parent
    missing = [
        f"{path.relative_to(SRC)} (tests/unit/{' or '.join(_test_names(path))})"
        for path in _pure_modules()
        if str(path.relative_to(SRC)) not in TESTED_ELSEWHERE
        and not any((unit / name).exists() for name in _test_names(path))
    ]
    assert not missing, "pure modules without a test module: " + ", ".join(missing)
    pure = {str(path.relative_to(SRC)) for path in _pure_modules()}
    assert set(TESTED_ELSEWHERE) <= pure, "an exception names a module that is not pure (or gone)"


def _imports_under(package: str) -> dict[str, set[str]]:
    return {str(m.relative_to(SRC)): _imports(m) for m in sorted((SRC / package).rglob("*.py"))}


def _hits(imports: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {i for i in imports if any(i == p or i.startswith(p + ".") for p in prefixes)}


def test_the_etcd_layer_knows_nothing_of_channels_or_facades() -> None:
    upward = ("grpc_etcd._channel", "grpc_etcd.aio", "grpc_etcd._registry")
    for module, imports in _imports_under("registry").items():
        assert not _hits(imports, upward), module


def test_the_channel_package_knows_nothing_of_etcd() -> None:
    upward = ("grpc_etcd.registry", "grpc_etcd.aio", "grpc_etcd._registry")
    for module, imports in _imports_under("_channel").items():
        assert not _hits(imports, upward), module


# Each line, in a fresh interpreter, imports in another order and checks every public path.
_CHECK = (
    "import grpc_etcd, grpc_etcd.aio;"
    "assert callable(grpc_etcd.channel) and callable(grpc_etcd.aio.channel);"
    "assert grpc_etcd.BalancedChannel.__module__ == 'grpc_etcd._channel._sync';"
    "assert grpc_etcd.aio.BalancedChannel.__module__ == 'grpc_etcd._channel._aio';"
    "assert grpc_etcd.testing.EtcdServer"
)


@pytest.mark.parametrize(
    "first",
    [
        "import grpc_etcd",
        "import grpc_etcd._channel._aio",
        "import grpc_etcd._channel._sync",
        "import grpc_etcd.aio",
        "import grpc_etcd.registry",
        "import grpc_etcd.registry.etcd",
        "import grpc_etcd.testing",
        "from grpc_etcd.aio import Registry",
        "from grpc_etcd import channel",
    ],
)
def test_public_names_survive_any_import_order(first: str) -> None:
    subprocess.run([sys.executable, "-c", f"{first}\n{_CHECK}"], check=True)


def test_failed_call_shows_its_public_name() -> None:
    assert grpc_etcd.FailedCall.__module__ == "grpc_etcd"
    assert grpc_etcd.FailedCall.__qualname__ == "FailedCall"


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = grpc_etcd.no_such_name  # type: ignore[attr-defined]


def test_test_modules_have_unique_names() -> None:
    """Test folders are no packages, so pytest imports each test module by its base name: two
    ``test_x.py`` in different folders stop the whole run at collection."""
    tests = Path(__file__).parents[1]
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(tests.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(tests)} and {path.relative_to(tests)}")
        seen.setdefault(path.name, path)
    assert not clashes, "test modules with one name: " + "; ".join(clashes)
