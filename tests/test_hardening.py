"""Issue 12: no finished record is lost or silently stale; every bad setting is refused before training.

The CLI tests train nothing (exit 2 comes before any cell); the claim and
concurrency tests train tiny fake-MNIST cells.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, REPO_ROOT, bench_command, killing_first_worker, leftovers, records
from fakedata import write_omniglot

from bench import claims, cli, provenance, report
from bench.records import identity, store_record, validate_record

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning")


def run_args(data_root, results, *extra: str, strategies: str | None = "naive") -> list[str]:
    chosen = ["--strategies", strategies] if strategies is not None else []
    return ["run", "--scenario", "class-il", "--data-root", str(data_root), "--results", str(results),
            "--no-download", *chosen, *FAST, *extra]


def planned(args: list[str]) -> list:
    cells, _ = cli.plan(cli.build_parser().parse_args(args))
    return cells


def ok_record_for(cell, **changes) -> dict:
    """A whole ok record standing for `cell` (as the cell itself would have written it)."""
    record = {"status": "ok", "error": None, "config": cell.config,
              "acc_matrix": [[0.9, None], [0.4, 0.8]],
              "metrics": {"final_acc": 0.6, "avg_inc_acc": 0.75, "forgetting": 0.5, "bwt": -0.5},
              "time_s": 1.0, "peak_rss_mb": 100.0, "params": 10, "extra_state_bytes": 0,
              "device": cell.config.get("device", "cpu"), "threads": cell.config.get("threads", 1),
              "code": cell.code, "run_id": "earlier", "git_dirty": False}
    record.update(changes)
    return record


# ---------------------------------------------------------------- bad input: exit 2 before training

BAD = {
    # defect 4: an empty shell variable must not start the whole grid
    "empty strategy list": (["--strategies", ""], ["--strategies is empty"]),
    "only commas": (["--strategies", " , "], ["--strategies is empty"]),
    "empty name in the list": (["--strategies", "naive,,ewc"], ["empty name"]),
    "repeated strategy": (["--strategies", "naive,ewc,naive"], ["names naive more than once"]),
    # defect 2: the device
    "nonsense device": (["--device", "nonsense"], ["--device 'nonsense' is not a device"]),
    "cuda device index out of range": (["--device", "cuda:99"], ["--device cuda:99"]),
    "unsupported device type": (["--device", "meta"], ["only cpu, cuda and mps"]),
    # defect 7: each strategy's settings against its schema
    "ewc lambda not a number": (["--set", "strategies.ewc.lambda=abc"], ["strategies.ewc.lambda must be a number"]),
    "ewc lambda negative": (["--set", "strategies.ewc.lambda=-1"], ["strategies.ewc.lambda must be >= 0"]),
    "ewc lambda misspelt": (["--set", "strategies.ewc.lamda=100"], ["unknown setting strategies.ewc.lamda",
                                                                   "it declares lambda", "strategies/ewc.py"]),
    "lwf temperature zero": (["--set", "strategies.lwf.temperature=0"], ["strategies.lwf.temperature must be > 0"]),
    "lwf alpha a word": (["--set", "strategies.lwf.alpha=much"], ["strategies.lwf.alpha must be a number"]),
    "pnn width above one": (["--set", "strategies.pnn.width_factor=2"], ["strategies.pnn.width_factor"]),
    "pnn unknown key": (["--set", "strategies.pnn.colums=3"], ["unknown setting strategies.pnn.colums"]),
    "ib threshold zero": (["--set", "strategies.ib.threshold=0"], ["strategies.ib.threshold must be > 0"]),
    "ib gamma a word": (["--set", "strategies.ib.gamma=lots"], ["strategies.ib.gamma must be a number"]),
    "ib kept means normalised": (["--strategies", "ib", "--set", "strategies.ib.ncm_means=kept", "--set",
                                  "strategies.ib.ncm_normalize=true"], ["ncm_normalize needs ncm_means"]),
    "replay unknown key": (["--set", "strategies.replay.size=5"], ["unknown setting strategies.replay.size"]),
    # backbone / dataset compatibility
    "resnet18 on mnist": (["--set", "backbone=resnet18"], ["backbone resnet18 takes images of shape (3, 32, 32)",
                                                           "mnist has (1, 28, 28)"]),
    "cifar backbone on mnist": (["--set", "backbone=convnet32"], ["backbone convnet32 takes images"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_before_training(case, mnist_root, tmp_path, capsys):
    extra, expected = BAD[case]
    strategies = None if any(a == "--strategies" for a in extra) else "naive"
    results = tmp_path / "results"
    assert cli.main(run_args(mnist_root, results, *extra, strategies=strategies)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert "Traceback" not in err
    assert not list(results.glob("runs/*.json"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_unavailable_cuda_is_refused_and_keeps_the_ok_record(mnist_root, tmp_path, capsys):
    """Defect 2: `--device cuda --force` without a GPU used to replace an ok CPU record by a failed one."""
    results = tmp_path / "results"
    [(cell, _)] = planned(run_args(mnist_root, results))
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    cell.path.write_text(json.dumps(ok_record_for(cell)))
    before = cell.path.read_bytes()
    assert cli.main(run_args(mnist_root, results, "--device", "cuda", "--force")) == cli.EXIT_USAGE
    assert "no CUDA device is available" in capsys.readouterr().err
    assert cell.path.read_bytes() == before


def test_unwritable_tables_folder_exits_2_before_training(mnist_root, tmp_path, capsys):
    """Defect 6: only runs/ was checked; tables/ failed with a traceback after training."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "tables").write_text("a file where the tables folder goes")
    assert cli.main(run_args(mnist_root, results)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"cannot write records under {results}" in err and "tables" in err
    assert not list(results.glob("runs/*.json"))


def test_omniglot_character_without_images_exits_2(tmp_path, capsys):
    root = tmp_path / "data"
    write_omniglot(root, n_alphabets_background=2, n_alphabets_evaluation=1, chars_per_alphabet=2, drawers=20)
    empty = root / "omniglot-py" / "images_background" / "Background_Script_01" / "character02"
    for png in empty.glob("*.png"):
        png.unlink()
    args = ["run", "--scenario", "task-il", "--dataset", "omniglot", "--strategies", "naive",
            "--data-root", str(root), "--results", str(tmp_path / "results"), "--no-download", *FAST]
    assert cli.main(args) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Background_Script_01/character02" in err and "no training images" in err


# ---------------------------------------------------------------- identity: device, threads, code

def test_threads_and_device_are_part_of_the_identity(mnist_root, tmp_path):
    results = tmp_path / "results"
    [(one, done)] = planned(run_args(mnist_root, results))
    assert not done
    one.path.parent.mkdir(parents=True, exist_ok=True)
    one.path.write_text(json.dumps(ok_record_for(one)))
    assert planned(run_args(mnist_root, results))[0][1]  # the same command: done
    [(two, done)] = planned(run_args(mnist_root, results, "--threads", "2"))
    assert not done and two.path != one.path and two.config["threads"] == 2  # defect 2: not "done"
    # A record that stores other threads or device than its name says is not taken for this cell.
    one.path.write_text(json.dumps(ok_record_for(one, threads=2)))
    assert not planned(run_args(mnist_root, results))[0][1]
    one.path.write_text(json.dumps(ok_record_for(one, device="cuda")))
    assert not planned(run_args(mnist_root, results))[0][1]


def test_a_record_made_by_other_code_is_rerun_and_marked_in_tables(mnist_root, tmp_path, capsys):
    """Defect 8: records by older code counted as done and were mixed into tables unmarked."""
    results = tmp_path / "results"
    [(cell, _)] = planned(run_args(mnist_root, results))
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    cell.path.write_text(json.dumps(ok_record_for(cell, code="0123456789abcdef")))
    [(again, done)] = planned(run_args(mnist_root, results))
    assert not done and again.path == cell.path  # rerun, and its record will replace the old one
    cell.path.write_text(json.dumps({k: v for k, v in ok_record_for(cell).items() if k != "code"}))
    assert not planned(run_args(mnist_root, results))[0][1]  # records from before fingerprints too

    assert cli.main(["table", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"| naive{report.OLD_CODE_MARK}" in out
    caption = (results / "tables" / "mnist_class-il.md").read_text().splitlines()[0]
    assert f"{report.OLD_CODE_MARK} Some seeds were made by older code" in caption

    cell.path.write_text(json.dumps(ok_record_for(cell, git_dirty=True)))
    assert cli.main(["table", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"| naive{report.DIRTY_MARK} " in out and report.OLD_CODE_MARK not in out


def test_code_files_are_what_runs_in_a_cell():
    def names(module):
        return {p.relative_to(REPO_ROOT).as_posix() for p in provenance.code_files(module)}

    ewc = names("strategies.ewc")
    for f in ("bench/cell.py", "bench/strategy.py", "bench/memory.py", "bench/batches.py", "bench/models.py",
              "bench/heads.py", "bench/scenarios.py", "bench/datasets.py", "bench/metrics.py",
              "bench/config.py", "bench/settings.py", "strategies/ewc.py"):
        assert f in ewc, f
    for f in ("bench/runner.py", "bench/cli.py", "bench/report.py", "bench/claims.py", "bench/records.py",
              "bench/provenance.py", "strategies/lwf.py"):
        assert f not in ewc, f
    assert {"strategies/ib/__init__.py", "strategies/ib/plugin.py", "strategies/ib/network.py"} <= names("strategies.ib")
    assert "strategies/pnn/network.py" in names("strategies.pnn")
    assert provenance.code_fingerprint("strategies.ewc") != provenance.code_fingerprint("strategies.lwf")


@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """bench/ and strategies/ copied into a git repository of their own, which provenance then reads."""
    copy = tmp_path / "project"
    for part in ("bench", "strategies"):
        shutil.copytree(REPO_ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "README.md").write_text("readme\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(copy)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    monkeypatch.setattr(provenance, "PROJECT_DIR", copy)
    provenance._provenance.cache_clear()
    yield copy
    provenance._provenance.cache_clear()


def test_fingerprint_and_dirty_flag_follow_the_cell_code_only(project_copy):
    def state():
        provenance._provenance.cache_clear()
        return provenance.code_fingerprint("strategies.ewc"), provenance.provenance("strategies.ewc")["git_dirty"]

    base, dirty = state()
    assert dirty is False
    for path in ("README.md", "bench/runner.py", "bench/report.py", "strategies/lwf.py",
                 "bench/protocols/mnist-class-il.toml"):
        with open(project_copy / path, "a") as f:
            f.write("\n# edited while a grid runs\n")
        assert state() == (base, False), path
    with open(project_copy / "bench" / "memory.py", "a") as f:
        f.write("\n# a comment in a module that runs in the cell: same behaviour, but not the commit's bytes\n")
    assert state() == (base, True)
    with open(project_copy / "bench" / "memory.py", "a") as f:
        f.write("\n_CHANGED = 1  # a change to code that runs in the cell\n")
    changed, dirty = state()
    assert changed != base and dirty is True


# ---------------------------------------------------------------- one validity rule, reports never crash

MALFORMED = {
    "config.seed": [[0], "0", -1, 1.5, True, None, {}],  # defect 5: a list took down table and plot
    "config.memory": [[200], "lots", {}, -5, 2.5],
    "config.epochs": [[1], {}, "x"],
    "config.hash": [["h"], 3, ""],
    "config.strategy": [None, 5, ["naive"]],
    "config": [[], "x", None],
    "status": ["OK", None, 1],
    "acc_matrix": [None, [], [[]], [[1.0, "x"]], "rows", [[float("nan")]], [1.0]],
    "metrics": [None, [], "x"],
    "metrics.final_acc": ["0.6", None, [0.6], True, float("inf")],  # defect 3: missing, below
    "time_s": ["slow", [1], None, {}],
    "params": ["many", [1], -3],
    "extra_state_bytes": ["x", [1]],
    "per_task": ["x", [1, 2], [{"active": "x", "widths": [0]}], {"a": 1}],
    "git_dirty": ["yes", [1]],
    "code": [[1], {}, 5],
    "device": [[1], None],
}


def _set(record: dict, dotted: str, value) -> dict:
    record = json.loads(json.dumps(record))
    node, *parts = [record, *dotted.split(".")]
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return record


def test_reports_never_crash_on_record_content(mnist_root, tmp_path, capsys):
    results = tmp_path / "results"
    [(cell, _)] = planned(run_args(mnist_root, results))
    good = ok_record_for(cell)
    runs = results / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    cell.path.write_text(json.dumps(good))
    bad = []
    for field, values in MALFORMED.items():
        for i, value in enumerate(values):
            path = runs / f"bad_{field}_{i}.json"
            path.write_text(json.dumps(_set(good, field, value)))
            bad.append(path)
    missing = dict(good, metrics={k: v for k, v in good["metrics"].items() if k != "final_acc"})
    (runs / "no_final_acc.json").write_text(json.dumps(missing))
    for command in ("table", "plot"):
        assert cli.main([command, "--results", str(results)]) == 0, command
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert f"skipping {runs / 'no_final_acc.json'}: missing field 'metrics.final_acc'" in err
    # the end of `run` rebuilds the tables from the same records
    assert cli.main(run_args(mnist_root, results)) == 0
    assert "already done" in capsys.readouterr().err


def test_run_and_table_agree_on_what_a_record_is(mnist_root, tmp_path, capsys):
    """Defect 3: an ok record without metrics.final_acc was done for run and skipped by table."""
    results = tmp_path / "results"
    [(cell, _)] = planned(run_args(mnist_root, results))
    cell.path.parent.mkdir(parents=True, exist_ok=True)
    for field, values in MALFORMED.items():
        for value in values:
            record = _set(ok_record_for(cell), field, value) if field != "config" else None
            if record is None or not isinstance(record.get("config"), dict):
                continue
            cell.path.write_text(json.dumps(record))
            usable = validate_record(record) is None and record["status"] == "ok"
            done = planned(run_args(mnist_root, results))[0][1]
            records_used, _ = report.load_records(results)
            capsys.readouterr()
            # run counts it as done only if it is a usable ok record; table uses it only if usable
            assert done <= usable, (field, value)
            assert (len(records_used) == 1) == (validate_record(record) is None), (field, value)


# ---------------------------------------------------------------- nothing to run: no data needed (issue 13)

def test_all_done_reports_without_reading_data(mnist_root, tmp_path, capsys):
    results = tmp_path / "results"
    cells = planned(run_args(mnist_root, results, "--seeds", "2"))
    for cell, _ in cells:
        cell.path.parent.mkdir(parents=True, exist_ok=True)
        cell.path.write_text(json.dumps(ok_record_for(cell)))
    offline = tmp_path / "no-data-here"
    assert cli.main(run_args(offline, results, "--seeds", "2")) == 0
    captured = capsys.readouterr()
    assert captured.err.count("already done: ") == 2 and "| naive" in captured.out
    # with one cell to run, the data is checked before any training
    cells[1][0].path.unlink()
    assert cli.main(run_args(offline, results, "--seeds", "2")) == cli.EXIT_USAGE
    assert str(offline) in capsys.readouterr().err


# ---------------------------------------------------------------- storing: never lose an ok record

def test_store_record_never_replaces_an_ok_record_by_a_failed_one(tmp_path):
    class C:  # the fields of a Cell that records use
        config = {"dataset": "mnist", "scenario": "class-il", "strategy": "naive", "seed": 0, "hash": "h"}
        code = "c"

    path = tmp_path / "r.json"
    wanted = identity(C.config, "c", "cpu", 1)
    ok = ok_record_for(C, run_id="theirs")
    failed = {"status": "failed", "error": "x", "config": C.config, "acc_matrix": None, "metrics": None,
              "run_id": "ours"}
    path.write_text(json.dumps(ok))
    assert not store_record(path, failed, wanted, tag="ours")
    assert json.loads(path.read_text()) == ok
    # an ok record by other code is not replaced by a failure either (--force, a failing device)
    path.write_text(json.dumps({**ok, "code": "old"}))
    assert not store_record(path, failed, wanted, tag="ours")
    # an ok record of this identity made by another run stands; our own ok result is not written over it
    path.write_text(json.dumps(ok))
    assert not store_record(path, {**ok, "run_id": "ours", "time_s": 2.0}, wanted, tag="ours")
    assert json.loads(path.read_text())["run_id"] == "theirs"
    # a failed or stale record is replaced
    path.write_text(json.dumps(failed))
    assert store_record(path, {**ok, "run_id": "ours"}, wanted, tag="ours")
    path.write_text(json.dumps({**ok, "code": "old"}))
    assert store_record(path, {**ok, "run_id": "ours"}, wanted, tag="ours")
    assert leftovers(tmp_path.parent) == [] and not list(tmp_path.glob("*.tmp"))


def test_a_killed_worker_never_replaces_an_ok_record_another_run_wrote(mnist_root, tmp_path, capsys):
    """Defect 1: run B finishes a cell while run A trains it; A's worker is killed: B's ok record stays."""
    results = tmp_path / "results"
    args = run_args(mnist_root, results, "--set", "strategies.naive.epochs=40")
    [(cell, _)] = planned(args)
    theirs = ok_record_for(cell, run_id="other-run")
    # the other run's record lands just before our worker is killed
    with killing_first_worker(lambda: cell.path.write_text(json.dumps(theirs))) as killed:
        code = cli.main(args)
    assert killed, "no worker was seen"
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and "killed by signal 9" in err and "is kept" in err
    assert json.loads(cell.path.read_text()) == theirs
    assert leftovers(results) == [] and not list(results.glob("runs/*.claim"))


# ---------------------------------------------------------------- claims

def _claim_file(cell, **owner) -> Path:
    path = claims.claim_path(cell.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), "host": claims.HOST, "started": time.time(),
                                "run_id": "abc", **owner}))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claimed_cells_are_skipped_and_stale_claims_taken_over(mnist_root, tmp_path, capsys):
    results = tmp_path / "results"
    args = run_args(mnist_root, results)
    [(cell, _)] = planned(args)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim = _claim_file(cell, pid=sleeper.pid)  # a live run on this host has it
        assert cli.main(args) == 0
        err = capsys.readouterr().err
        assert f"running elsewhere (pid {sleeper.pid} on {claims.HOST}" in err
        assert "0 not run, 1 running elsewhere" in err and not cell.path.exists()
        assert claim.exists()
        # the same with --force: a live claim on this host is always honoured
        assert cli.main(args + ["--force"]) == 0 and not cell.path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    capsys.readouterr()
    _claim_file(cell, pid=_dead_pid())  # its run is gone: the claim is stale
    assert cli.main(args) == 0
    assert "1 ok, 0 failed" in capsys.readouterr().err
    assert records(results)[cell.path.name]["status"] == "ok" and not claim.exists()


def test_claims_from_other_hosts_are_honoured_until_force(mnist_root, tmp_path, capsys):
    results = tmp_path / "results"
    args = run_args(mnist_root, results)
    [(cell, _)] = planned(args)
    claim = _claim_file(cell, host="another-machine", pid=1)
    assert cli.main(args) == 0
    assert "running elsewhere (pid 1 on another-machine" in capsys.readouterr().err
    assert not cell.path.exists()
    assert cli.main(args + ["--force"]) == 0
    assert records(results)[cell.path.name]["status"] == "ok" and not claim.exists()


def _try_claim(record: str, run_id: str, start, out) -> None:
    start.wait()
    try:
        held = claims.claim(Path(record), run_id)
    except claims.Held:
        out.put((run_id, False))
        return
    out.put((run_id, True))
    time.sleep(1.0)  # hold it while the others try
    held.release()


def test_a_stale_claim_is_taken_over_by_exactly_one_process(tmp_path):
    record = tmp_path / "runs" / "cell.json"
    path = claims.claim_path(record)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": _dead_pid(), "host": claims.HOST, "started": 0, "run_id": "dead"}))
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_try_claim, args=(str(record), f"r{i}", start, out)) for i in range(6)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    winners = [run for run, won in results if won]
    assert len(winners) == 1, results
    assert not path.exists()  # the winner released it


def test_two_identical_runs_train_each_cell_once(mnist_root, bench_env, tmp_path):
    """Done-when of issue 12: two runs started together on one folder share the cells, all end ok."""
    results = tmp_path / "results"
    args = run_args(mnist_root, results, "--seeds", "2", "--jobs", "1", strategies="naive,ewc")
    procs = [subprocess.Popen(bench_command(*args), cwd=REPO_ROOT, env=bench_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = sum(out.count(": final accuracy") for out in outputs)
    assert trained == 4, outputs
    recs = records(results)
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs.values())
    assert leftovers(results) == [] and not list(results.glob("runs/*.claim"))


def test_a_cell_that_ran_other_code_than_planned_is_not_recorded_ok(tmp_path):
    """Code edited (or checked out) between planning a run and starting a cell: the cell ran
    code its record would not name, so it is stored failed and trained again by a later run."""
    from bench.runner import Cell, store_result

    config = {"dataset": "mnist", "scenario": "class-il", "strategy": "naive", "seed": 0, "hash": "h"}
    cell = Cell(config, tmp_path / "r.json", code="planned", run_id="ours")
    wanted = identity(config, "planned", "cpu", 1)
    ok = {**ok_record_for(cell, run_id="ours"), "code_ran": "edited"}
    stored = store_result(cell, ok, wanted, {})
    assert stored["status"] == "failed" and "code changed after the run was planned" in stored["error"]
    on_disk = json.loads(cell.path.read_text())
    assert on_disk["status"] == "failed" and on_disk["code"] == "planned" and "code_ran" not in on_disk
    # the same code as planned: stored ok, without the check's field
    stored = store_result(cell, {**ok, "code_ran": "planned"}, wanted, {})
    assert stored["status"] == "ok" and json.loads(cell.path.read_text())["status"] == "ok"
    assert "code_ran" not in json.loads(cell.path.read_text())


def test_a_stale_claim_beside_a_done_record_is_cleared_by_the_next_run(tmp_path):
    """A run killed between storing a record and releasing its claim leaves the claim; the cell
    is done, so no run claims it again: the next run that finds it done clears the stale claim,
    while a live run's claim stays."""
    record = tmp_path / "r.json"
    # a pid above Linux's largest (2**22): no process has it
    claims.claim_path(record).write_text(json.dumps({"pid": 2**22 + 7, "host": claims.HOST,
                                                     "started": time.time(), "run_id": "dead"}))
    assert claims.clear_stale(record) and not claims.claim_path(record).exists()
    assert not claims.clear_stale(record)  # nothing to clear
    live = claims.claim(record, run_id="live")
    try:
        assert not claims.clear_stale(record) and claims.claim_path(record).exists()
    finally:
        live.release()
