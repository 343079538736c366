"""What a record needs to be trusted or redone: the code that made it, package versions, host, build.

The code fingerprint stands for the behaviour of the code whose code runs inside a cell:
`bench/cell.py`, `bench/config.py` and every project module they import (followed through the import
statements, also those inside functions), plus the strategy's own module or
package and what it imports. It hashes each module's syntax tree with its
docstrings removed, keyed by the module's name, so a comment, docstring, blank
line or formatting edit leaves finished records valid while any change of code
(a constant, a call, an annotation) does not. The runner, CLI and reports are
not among them, nor the protocol files (the configuration hash covers their
settings), so editing those does not make finished records stale. Records made
by other code are not "done" (`run` reruns them) and are marked in tables.

`byte_fingerprint` is the hash this suite used before (the files' bytes); it is
kept only for `restamp`, the one migration step from it.
"""
from __future__ import annotations

import ast
import copy
import functools
import hashlib
import os
import platform
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "strategies")  # the project's own code; anything else is a package version
# The cell, and the configuration code whose defaults and checks shape what a cell is given.
ENTRIES = ("bench.cell", "bench.config")
# Imported by the cell only to describe the record; it does not change a result.
NOT_RESULT_CODE = ("bench.provenance",)
# CPython 3.11 keeps one AST-construction depth counter per interpreter: an `ast.parse` that runs
# while another thread's is converting its tree fails with "AST constructor recursion depth
# mismatch" (python/cpython#106905). The lock serialises this module's parses; the retry covers a
# parse by some other library's thread (a Dask worker's, a test's), whose tree is then rebuilt.
_PARSE_LOCK = threading.Lock()
_PARSE_TRIES = 5


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = PROJECT_DIR.joinpath(*parts)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _parse(path: Path) -> ast.Module:
    """The module's syntax tree, parsed again when another thread's parse upset CPython's counter."""
    failures = 0
    while True:
        try:
            with _PARSE_LOCK:
                return ast.parse(path.read_text(encoding="utf-8"), str(path))
        except SystemError as exc:
            failures += 1
            if "recursion depth mismatch" not in str(exc) or failures == _PARSE_TRIES:
                raise


def _imports(name: str, path: Path) -> set[str]:
    """Project modules named by the import statements of a module (at any depth in its code)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    # a submodule import runs its packages' __init__ too
    found |= {".".join(m.split(".")[:i]) for m in list(found) for i in range(1, m.count(".") + 1)}
    return {m for m in found if _module_file(m) is not None}


def code_files(strategy_module: str | None = None) -> list[Path]:
    """The source files whose code runs in a cell of the strategy in module `strategy_module`."""
    todo = [*ENTRIES] + ([strategy_module] if strategy_module else [])
    if strategy_module and _module_file(strategy_module).name == "__init__.py":  # a package: all of it
        folder = _module_file(strategy_module).parent
        todo += [f"{strategy_module}.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem != "__init__"]
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None or name in NOT_RESULT_CODE:
            continue
        seen[name] = path
        todo.extend(_imports(name, path))
    return sorted(set(seen.values()))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _without_docstrings(tree: ast.Module) -> ast.Module:
    """`tree` with the docstring of the module and of every class and function removed (in place)."""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            # a body cannot be empty: a function that was only a docstring behaves like one that passes
            node.body = body[1:] or [ast.Pass()]
    return tree


def behaviour(path: Path) -> str:
    """The module's code as its syntax tree shows it: no comments, docstrings, line numbers or layout."""
    tree = _parse(path)
    return ast.dump(_without_docstrings(tree), annotate_fields=False, include_attributes=False)


def fingerprint(files: list[Path]) -> str:
    """Hash of the modules' names and their code (see `behaviour`)."""
    digest = hashlib.sha256()
    for name, path in sorted((_module_name(p), p) for p in files):
        digest.update(name.encode() + b"\0" + behaviour(path).encode() + b"\0")
    return digest.hexdigest()[:16]


def byte_fingerprint(files: list[Path]) -> str:
    """The former fingerprint: a hash of the files' paths and bytes (only `restamp` uses it)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(PROJECT_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_fingerprint(strategy_module: str | None) -> str:
    """The fingerprint of the code a cell of this strategy runs (see the module docstring)."""
    return fingerprint(code_files(strategy_module))


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_build() -> dict[str, Any] | None:
    """BLAS, LAPACK, oneDNN and CPU capability of the torch build: what float results depend on."""
    torch = sys.modules.get("torch")  # only describe a torch that this process has already loaded
    if torch is None:
        return None
    text = torch.__config__.show()
    settings = dict(re.findall(r"(\w+)=([^,\s]*)", text))
    lines = [line.strip(" -") for line in text.splitlines()]
    blas = next((line for line in lines if "Math Kernel Library" in line or "OpenBLAS" in line), None)
    onednn = next((line for line in lines if "MKL-DNN" in line or "oneDNN" in line), None)
    capability = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("CPU capability")), None)
    return {"blas": settings.get("BLAS_INFO"), "lapack": settings.get("LAPACK_INFO"), "blas_library": blas,
            "onednn": onednn, "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
            "cpu_capability": capability}


@functools.lru_cache(maxsize=None)
def _provenance(files: tuple[Path, ...]) -> dict[str, Any]:
    from importlib import metadata

    def version(module: str, dist: str) -> str | None:
        loaded = sys.modules.get(module)  # the imported module knows its build (e.g. 2.14.1+cpu)
        if getattr(loaded, "__version__", None):
            return str(loaded.__version__)
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    # dirty: only the fingerprinted files count (editing the README or tables mid-grid does not)
    status = _git("status", "--porcelain", "--untracked-files=all", "--",
                  *(str(p.relative_to(PROJECT_DIR)) for p in files)) if files else None
    return {
        "versions": {"python": platform.python_version(),
                     **{m: version(m, d) for m, d in (("torch", "torch"), ("torchvision", "torchvision"),
                                                     ("avalanche", "avalanche-lib"), ("numpy", "numpy"))}},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "host": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                 "cpu_model": _cpu_model(), "cpus": os.cpu_count(), "torch_build": _torch_build()},
    }


def provenance(strategy_module: str | None = None) -> dict[str, Any]:
    """Package versions, git commit, whether the cell's code differs from it, host and torch build."""
    return copy.deepcopy(_provenance(tuple(code_files(strategy_module))))
