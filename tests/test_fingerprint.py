"""The code fingerprint follows behaviour: docstrings, comments and layout leave records done; code does not."""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import FAST, REPO_ROOT, bench_command

from bench import provenance


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's code that a test may edit; provenance reads it instead of the checkout."""
    copy = tmp_path / "project"
    for folder in ("bench", "strategies", "scripts"):
        shutil.copytree(REPO_ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PROJECT_DIR", copy)
    return copy


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_docstrings_comments_and_layout_leave_the_fingerprint_but_code_changes_it(project: Path) -> None:
    before = provenance.code_fingerprint("strategies.naive")
    cell = project / "bench" / "cell.py"
    text = cell.read_text()
    doc = re.match(r'("""|\'\'\')(.*?)\1', text.lstrip(), re.S)
    assert doc, "bench/cell.py has a module docstring to edit"
    edit(cell, doc.group(2), "Reworded. " + doc.group(2))
    edit(project / "strategies" / "naive.py", "\n", "\n# a comment\n\n")  # a comment and a blank line
    edit(project / "strategies" / "naive.py", "def build(ctx):\n", 'def build(ctx):\n    """Added."""\n')
    assert provenance.code_fingerprint("strategies.naive") == before

    change_first_int(project / "bench" / "cell.py")
    assert provenance.code_fingerprint("strategies.naive") != before


def change_first_int(path: Path) -> None:
    """Add one to the first whole-number constant in the module's code."""
    lines = path.read_text().splitlines(keepends=True)
    node = next(n for n in ast.walk(ast.parse("".join(lines)))
                if isinstance(n, ast.Constant) and type(n.value) is int and n.lineno == n.end_lineno)
    line = lines[node.lineno - 1]
    lines[node.lineno - 1] = line[:node.col_offset] + str(node.value + 1) + line[node.end_col_offset:]
    path.write_text("".join(lines))


def test_the_fingerprint_is_keyed_by_module_name(project: Path) -> None:
    """The same code in a module of another name is not the same code (an import would find other code)."""
    a = project / "strategies" / "naive.py"
    b = project / "strategies" / "naive_copy.py"
    b.write_text(a.read_text())
    assert provenance.behaviour(a) == provenance.behaviour(b)
    assert provenance.fingerprint([a]) != provenance.fingerprint([b])


def _record(tmp: Path, name: str, strategy: str, code: str) -> Path:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"status": "ok", "code": code,
                                "config": {"strategy": strategy, "dataset": "mnist", "seed": 0}}))
    return path


def test_the_migration_restamps_only_records_of_identical_code(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from restamp_fingerprints import restamp
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    files = provenance.code_files("strategies.naive")
    old, new = provenance.byte_fingerprint(files), provenance.fingerprint(files)
    same = _record(tmp_path, "same", "naive", old)
    other = _record(tmp_path, "other", "naive", "0123456789abcdef")
    elsewhere = _record(tmp_path, "elsewhere", "replay", old)  # naive's old code, but replay runs other code
    counts = restamp([tmp_path])
    assert json.loads(same.read_text())["code"] == new
    assert json.loads(same.read_text())["code_bytes"] == old
    assert json.loads(other.read_text())["code"] == "0123456789abcdef"
    assert json.loads(elsewhere.read_text())["code"] == old
    assert counts == {"re-stamped": 1, "other code, kept": 2}
    assert restamp([tmp_path])["already new"] == 1  # running it again changes nothing


def test_a_docstring_edit_leaves_a_finished_grid_done(tmp_path: Path, mnist_root: Path, bench_env: dict) -> None:
    """End to end: `bench run` in a copy of the project, a docstring and comment edit, `bench run` again."""
    project = tmp_path / "project"
    for folder in ("bench", "strategies"):
        shutil.copytree(REPO_ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**bench_env, "PYTHONPATH": str(project)}
    cmd = [*bench_command("run", "--scenario", "task-il", "--strategies", "naive,lwf", "--jobs", "1",
                          "--data-root", str(mnist_root), "--results", str(tmp_path / "results"), *FAST)]
    first = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    edit(project / "bench" / "cell.py", '"""', '"""Reworded: ')
    edit(project / "strategies" / "lwf.py", "\n", "\n# why this line is here, now explained\n")
    again = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stderr.count("already done: ") == 2, again.stderr[-3000:]
    edit(project / "strategies" / "lwf.py", "def build", "_UNUSED = 1\n\n\ndef build")  # code, though idle
    third = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and third.stderr.count("already done: ") == 1, third.stderr[-3000:]


def test_a_parse_upset_by_another_thread_is_parsed_again(project: Path, monkeypatch) -> None:
    """CPython 3.11's shared AST depth counter makes a parse fail while another thread parses
    (python/cpython#106905, seen in a Dask worker): the fingerprint parses again and comes out the
    same; any other SystemError, or the same one every time, still raises."""
    path = project / "strategies" / "naive.py"
    expected = provenance.behaviour(path)
    real = ast.parse
    upset = SystemError("AST constructor recursion depth mismatch (before=51, after=68)")

    def parse_failing(times: int, exc: SystemError) -> SimpleNamespace:
        """provenance's own view of the ast module, whose parse fails `times` times first."""
        left = [times]

        def parse(*args, **kwargs):
            if left[0] > 0:
                left[0] -= 1
                raise exc
            return real(*args, **kwargs)
        return SimpleNamespace(**{**vars(ast), "parse": parse})

    monkeypatch.setattr(provenance, "ast", parse_failing(2, upset))
    assert provenance.behaviour(path) == expected
    monkeypatch.setattr(provenance, "ast", parse_failing(1, SystemError("other")))
    with pytest.raises(SystemError, match="other"):
        provenance.behaviour(path)
    monkeypatch.setattr(provenance, "ast", parse_failing(provenance._PARSE_TRIES, upset))
    with pytest.raises(SystemError, match="mismatch"):
        provenance.behaviour(path)
