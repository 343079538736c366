"""Files the suite rewrites are replaced whole and keep what the user set on them (issue 29, items 1, 3, 5).

bench/files.py's `atomic_write` (tables, plots, README, protocols): mode, line endings and
symlinks kept, a failed write leaves the old file; `locked` serialises the protocol's
read-modify-write; `run --force` keeps the record it replaces; README markers that a
rewrite would mangle stop `bench table --readme` with exit 2 and leave the file as it was.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import FAST

from bench import cli
from bench import config as cfg
from bench import readme
from bench.files import atomic_write

REPO = Path(__file__).parents[1]


def test_atomic_write_keeps_the_mode_and_gives_a_new_file_the_umask_mode(tmp_path):
    kept = tmp_path / "kept.md"
    kept.write_text("old\n")
    kept.chmod(0o644)
    atomic_write(kept, "new\n")
    assert kept.read_text() == "new\n" and (kept.stat().st_mode & 0o777) == 0o644
    mask = os.umask(0o022)
    try:
        fresh = atomic_write(tmp_path / "fresh.md", "x\n")
    finally:
        os.umask(mask)
    assert (fresh.stat().st_mode & 0o777) == 0o644  # 0666 less the umask, not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.md", "kept.md"]  # no temporary left


def test_atomic_write_keeps_crlf_line_endings(tmp_path):
    path = tmp_path / "README.md"
    path.write_bytes(b"a\r\nb\r\n")
    atomic_write(path, "a\nc\n")
    assert path.read_bytes() == b"a\r\nc\r\n"


def test_atomic_write_through_a_symlink_rewrites_its_target(tmp_path):
    target = tmp_path / "docs" / "README.md"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "README.md"
    link.symlink_to(target)
    atomic_write(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_a_write_cut_short_by_a_file_size_limit_leaves_the_old_protocol(tmp_path):
    """The tune write-back under RLIMIT_FSIZE: the write fails whole, the protocol stays as it was
    (the old `path.write_text` left the first 4,096 bytes, which still parsed)."""
    folder = tmp_path / "protocols"
    shutil.copytree(cfg.PROTOCOL_DIR, folder)
    path = folder / "mnist-class-il.toml"
    path.write_text(path.read_text() + "\n# padding\n" * 600)
    before = path.read_bytes()
    assert len(before) > 8192
    script = f"""
import argparse, resource, signal, sys
from pathlib import Path
from bench import config as cfg, protocol_writeback
cfg.PROTOCOL_DIR = Path({str(folder)!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
args = argparse.Namespace(dataset="mnist", scenario="class-il")
try:
    protocol_writeback.write_choice(args, 200, "ewc", {{"lambda": 1.0}}, 0.5, "python -m bench tune")
except OSError as exc:
    print("refused:", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout
    assert path.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".mnist-class-il.toml.")) in \
        ([], [".mnist-class-il.toml.lock"])  # no temporary file left


def test_the_protocol_write_back_waits_for_the_lock(tmp_path, monkeypatch):
    """Two tunes at once: the second read-modify-write starts only after the first has written."""
    import argparse

    from bench import protocol_writeback
    from bench.files import locked

    folder = tmp_path / "protocols"
    shutil.copytree(cfg.PROTOCOL_DIR, folder)
    monkeypatch.setattr(cfg, "PROTOCOL_DIR", folder)
    path = folder / "mnist-class-il.toml"
    before = path.read_bytes()
    args = argparse.Namespace(dataset="mnist", scenario="class-il")
    writer = threading.Thread(target=protocol_writeback.write_choice,
                              args=(args, 200, "ewc", {"lambda": 7.0}, 0.5, "cmd"))
    with locked(path):
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive() and path.read_bytes() == before  # held: it waits, it has not written
    writer.join(timeout=60)
    assert not writer.is_alive()
    assert cfg.load_protocol("mnist", "class-il")["strategies"]["ewc"]["lambda"] == 7.0


def test_run_force_replaces_the_record_and_keeps_the_old_one(mnist_root, tmp_path, capsys):
    results = tmp_path / "results"
    args = ["run", "--scenario", "class-il", "--strategies", "naive", "--data-root", str(mnist_root),
            "--results", str(results), "--no-download", "--jobs", "1", *FAST]
    assert cli.main(args) == 0
    [path] = (results / "runs").glob("*.json")
    old = path.read_bytes()
    capsys.readouterr()
    assert cli.main([*args, "--force"]) == 0
    err = capsys.readouterr().err
    prev = path.with_name(path.name + ".prev")
    assert prev.read_bytes() == old  # the earlier record, byte for byte
    assert json.loads(path.read_text())["run_id"] != json.loads(old)["run_id"]  # replaced by the new one
    assert f"replaced {path}, the earlier ok record is kept as {prev}" in err
    assert [p.name for p in (results / "runs").glob("*.json")] == [path.name]  # tables see one record


@pytest.mark.parametrize("text,message", [
    ("a\n<!-- bench:table t1 -->\nold\n\nprose\n<!-- bench:table t2 -->\nx\n<!-- /bench:table -->\n",
     "block t2 opens inside block t1"),
    ("a\n<!-- bench:table t1 -->\nold\n<!-- /bench:table -->\nprose\n<!-- /bench:table -->\n",
     "closes no block"),
    ("<!-- bench:table t1 -->\nx\n<!-- /bench:table -->\n<!-- bench:table t1 -->\ny\n<!-- /bench:table -->\n",
     "a second block for table t1"),
    ("a\n<!-- bench:table t1 -->\nold\nprose the user wrote\n", "block t1 is never closed"),
], ids=["unclosed-then-another", "stray-close", "duplicate", "never-closed"])
def test_readme_sync_refuses_malformed_markers_and_leaves_the_file(tmp_path, capsys, text, message):
    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    (tmp_path / "results" / "runs").mkdir()
    for name in ("t1", "t2"):
        (tables / f"{name}.md").write_text(f"| table {name} |\n")
        (tables / f"{name}.csv").write_text("dataset,scenario,strategy,hash,x\n")
    path = tmp_path / "README.md"
    path.write_text(text)
    with pytest.raises(readme.ReadmeError, match=message):
        readme.update(path, tables)
    assert path.read_text() == text
    assert cli.main(["table", "--results", str(tmp_path / "results"), "--readme", str(path)]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert path.read_text() == text


def test_readme_sync_through_a_symlink_keeps_link_mode_and_crlf(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "t1.md").write_text("| new |\n")
    (tables / "t1.csv").write_text("dataset,scenario,strategy,hash,x\n")
    target = tmp_path / "docs" / "README.md"
    target.parent.mkdir()
    target.write_bytes(b"intro\r\n<!-- bench:table t1 -->\r\n| old |\r\n<!-- /bench:table -->\r\nend\r\n")
    target.chmod(0o644)
    link = tmp_path / "README.md"
    link.symlink_to(target)
    assert readme.update(link, tables) == []
    assert link.is_symlink() and (target.stat().st_mode & 0o777) == 0o644
    assert target.read_bytes() == b"intro\r\n<!-- bench:table t1 -->\r\n| new |\r\n<!-- /bench:table -->\r\nend\r\n"
