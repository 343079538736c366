"""docs/extending.md's examples run: its file blocks are written into a copy of the project and trained."""
import json
import re
import shutil
import subprocess
import sys

from conftest import FAST, REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"```(?:python|toml)\n# ((?:strategies|bench/protocols)/\S+)\n(.*?)```", re.S)


def guide_files() -> dict[str, str]:
    """{path: text} of every code block that starts with a file name (protocol blocks are appended)."""
    files: dict[str, str] = {}
    for path, text in BLOCK.findall(GUIDE.read_text(encoding="utf-8")):
        files[path] = files.get(path, "") + text
    return files


def test_the_guide_names_its_example_files():
    assert set(guide_files()) == {"strategies/l2_anchor.py", "strategies/recent_replay.py",
                                  "bench/protocols/mnist-class-il.toml"}


def test_the_guides_methods_train_through_bench_run(tmp_path, mnist_root, bench_env):
    copy = tmp_path / "project"
    for part in ("bench", "strategies"):
        shutil.copytree(REPO_ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    for path, text in guide_files().items():
        target = copy / path
        target.write_text((target.read_text() + "\n" if path.endswith(".toml") else "") + text)
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "bench", "run", "--scenario", "class-il", "--strategies",
                          "l2_anchor,recent_replay", "--data-root", str(mnist_root), "--results", str(results),
                          "--no-download", "--jobs", "1", *FAST], cwd=copy, env=bench_env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))]
    assert sorted(r["config"]["strategy"] for r in records) == ["l2_anchor", "recent_replay"]
    assert all(r["status"] == "ok" for r in records)
    by_name = {r["config"]["strategy"]: r for r in records}
    assert by_name["l2_anchor"]["config"]["params"] == {"weight": 0.01} and by_name["l2_anchor"]["shared_replay"]
    held = by_name["recent_replay"]["exemplars_held"]
    assert held == [40, 80, 120, 160, 200]  # each task brings 2 digits x 20 images, up to the budget of 200
    assert "recent_replay runs mnist class-il on its declared defaults" in run.stderr
