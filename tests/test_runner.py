"""Runs survive faults: atomic records, resume, failure isolation, determinism, provenance.

Cells train on a tiny fake MNIST (tests/fakedata.py) for one epoch. Runs that
need no signals go through `bench.cli.main` in this process (its fork server,
started once, then serves every later cell in well under a second); the
SIGKILL and Ctrl-C tests start `python -m bench` in a session of its own.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import FAST, REPO_ROOT, bench_command, cell_workers, killing_first_worker, leftovers, records

from bench import cli
from bench.runner import finished_ok, tmp_path as record_tmp_path, write_json_atomic

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning")

NAIVE = "mnist_class-il_naive_seed0_"
EWC = "mnist_class-il_ewc_seed0_"
# On the tests' tiny data an EWC cell takes about 0.1 s, a window a busy machine's polling can miss;
# 40 epochs make sure an interrupt sent once naive's record appears finds EWC still training.
SLOW_EWC = ("--set", "strategies.ewc.epochs=40")
# What two runs of the same cells must agree on (not timings, run ids or command lines).
SAME = ("status", "config", "acc_matrix", "metrics", "params", "extra_state_bytes", "data_checksums",
        "data_official", "device", "threads")


def run_args(data_root: Path, results: Path, *extra: str, strategies: str = "naive,ewc") -> list[str]:
    return ["run", "--scenario", "class-il", "--data-root", str(data_root), "--results", str(results),
            "--strategies", strategies, *FAST, *extra]


def assert_same_records(ours: Path, reference: Path, keys: tuple[str, ...]) -> None:
    """Both folders hold the same two ok records, equal in `keys`, and nothing half-written."""
    ref, got = records(reference), records(ours)
    assert sorted(got) == sorted(ref) and len(ref) == 2
    for name in ref:
        assert ref[name]["status"] == "ok"
        for key in keys:
            assert got[name][key] == ref[name][key], (name, key)
    assert leftovers(ours) == []


def named(recs: dict[str, dict], prefix: str) -> tuple[str, dict]:
    [(name, rec)] = [(n, r) for n, r in recs.items() if n.startswith(prefix)]
    return name, rec


@pytest.fixture(scope="module")
def reference(mnist_root, tmp_path_factory) -> Path:
    """An uninterrupted serial run of naive and EWC: the records other runs must reproduce."""
    results = tmp_path_factory.mktemp("reference")
    assert cli.main(run_args(mnist_root, results)) == 0
    return results


# ---------------------------------------------------------------- atomic records

def test_write_json_atomic_replaces_whole_file_and_cleans_up(tmp_path):
    path = tmp_path / "runs" / "a.json"
    write_json_atomic(path, {"status": "ok", "n": 1})
    old = path.read_text()
    with pytest.raises(TypeError):  # fails half-way through writing: the old record must survive
        write_json_atomic(path, {"status": "ok", "bad": object()}, tag="abc")
    assert path.read_text() == old
    assert list(path.parent.iterdir()) == [path]
    write_json_atomic(path, {"status": "failed"}, tag="abc")
    assert json.loads(path.read_text()) == {"status": "failed"}
    assert not record_tmp_path(path, "abc").exists()
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any other output


def test_finished_ok_needs_a_whole_ok_record_of_the_same_identity(tmp_path):
    path = tmp_path / "r.json"
    good = {"status": "ok", "config": {"dataset": "mnist", "scenario": "class-il", "strategy": "naive",
                                       "seed": 0, "hash": "abc"},
            "acc_matrix": [[1.0]], "metrics": {"final_acc": 1.0, "avg_inc_acc": 1.0, "forgetting": None,
                                               "bwt": None},
            "code": "c1", "device": "cpu", "threads": 1}
    wanted = {"hash": "abc", "code": "c1", "device": "cpu", "threads": 1}
    assert not finished_ok(path)  # missing
    path.write_text(json.dumps(good)[:-5])
    assert not finished_ok(path)  # truncated
    path.write_text(json.dumps(good))
    assert finished_ok(path, wanted)
    for key, other in (("hash", "other"), ("code", "c2"), ("device", "cuda"), ("threads", 2)):
        assert not finished_ok(path, {**wanted, key: other}), key  # each is part of the identity
    path.write_text(json.dumps({**good, "status": "failed"}))
    assert not finished_ok(path, wanted)
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "acc_matrix"}))
    assert not finished_ok(path, wanted)
    path.write_text(json.dumps({**good, "metrics": {"avg_inc_acc": 1.0}}))  # defect 3: no final_acc
    assert not finished_ok(path, wanted)


# ---------------------------------------------------------------- determinism and provenance

def test_serial_and_parallel_runs_give_identical_records(reference, mnist_root, tmp_path):
    parallel = tmp_path / "parallel"
    assert cli.main(run_args(mnist_root, parallel, "--jobs", "2")) == 0
    assert_same_records(parallel, reference, SAME)
    par = records(parallel)
    # The thread count is a property of the cell, not of --jobs: it fixes the float results.
    assert {r["threads"] for r in par.values()} == {1}


def test_records_carry_provenance(reference, mnist_root):
    name, rec = named(records(reference), NAIVE)
    config = rec["config"]
    assert {"dataset": "mnist", "scenario": "class-il", "strategy": "naive", "seed": 0, "epochs": 1,
            "batch_size": 16, "memory": 0}.items() <= config.items()
    assert name.endswith(f"_{config['hash']}.json") and config["optimizer"]["name"] == "adam"
    assert {"python", "torch", "torchvision", "avalanche", "numpy"} <= set(rec["versions"])
    assert all(rec["versions"].values())
    assert isinstance(rec["git_commit"], str) and len(rec["git_commit"]) == 40
    assert isinstance(rec["git_dirty"], bool)
    assert sorted(rec["data_checksums"]) == [f"MNIST/raw/{f}" for f in sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])]
    assert all(len(md5) == 32 for md5 in rec["data_checksums"].values())
    assert rec["data_official"] is False and len(rec["data_mismatched"]) == 4  # fake files
    assert rec["device"] == "cpu"
    assert rec["command"].startswith("python -m bench run --scenario class-il")
    assert "--strategies naive,ewc" in rec["command"] and str(mnist_root) in rec["command"]
    assert rec["run_id"] and rec["time_s"] > 0


# ---------------------------------------------------------------- failure isolation

def test_nan_loss_is_recorded_as_failed_and_the_others_finish(mnist_root, tmp_path, capsys):
    results = tmp_path / "nan"
    args = run_args(mnist_root, results, "--set", "strategies.ewc.optimizer.lr=1e30")
    assert cli.main(args) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "finished: 1 ok, 1 failed" in err
    assert "ewc seed 0: FAILED: FloatingPointError: loss is nan" in err
    recs = records(results)
    _, ewc = named(recs, EWC)
    _, naive = named(recs, NAIVE)
    assert naive["status"] == "ok" and ewc["status"] == "failed"
    assert "loss is nan" in ewc["error"] and ewc["acc_matrix"] is None and ewc["metrics"] is None
    assert "FloatingPointError" in ewc["traceback"] and ewc["git_commit"] and ewc["versions"]
    assert leftovers(results) == []

    assert cli.main(["table", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    [ewc_row] = [line for line in out.splitlines() if re.match(r"\| ewc\W", line)]
    assert "failed (1/1)" in ewc_row and "%" not in ewc_row
    assert ewc_row.count("failed (1/1)") >= 4  # every measured column, no numbers
    assert any(re.match(r"\| naive\W", line) and "failed" not in line for line in out.splitlines())

    # Running again keeps the finished cell and retries the failed one.
    assert cli.main(args) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "already done: mnist class-il naive seed 0" in err
    assert "[1/1] mnist class-il ewc seed 0: FAILED" in err


def test_killed_worker_is_recorded_as_failed_and_rerun(mnist_root, tmp_path, capsys):
    results = tmp_path / "killed-worker"
    # naive runs long enough to be killed (SIGKILL, like the kernel's OOM killer) while it trains
    args = run_args(mnist_root, results, "--set", "strategies.naive.epochs=30")
    with killing_first_worker() as killed:
        code = cli.main(args)
    assert killed, "no worker was seen"
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and "finished: 1 ok, 1 failed" in err
    recs = records(results)
    _, naive = named(recs, NAIVE)
    assert naive["status"] == "failed" and "killed by signal 9" in naive["error"]
    assert naive["versions"] and naive["git_commit"]  # the parent's failed record has provenance too
    assert named(recs, EWC)[1]["status"] == "ok"
    assert leftovers(results) == []
    # The next run would redo the killed cell only.
    planned, _ = cli.plan(cli.build_parser().parse_args(args))
    assert {cell.config["strategy"]: done for cell, done in planned} == {"naive": False, "ewc": True}


# ---------------------------------------------------------------- interrupting the main process

def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # a file, not a pipe: nobody reads while it runs
        # Ctrl-C as a terminal delivers it: pytest run in the background (`cmd &`) passes SIGINT on
        # ignored, and a Python started that way ignores it too
        return subprocess.Popen(bench_command(*args), cwd=REPO_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_record(proc: subprocess.Popen, runs: Path, log: Path, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(runs.glob("*.json"))
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"run ended (code {proc.returncode}) before any record:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no record after {timeout} s:\n{log.read_text()[-3000:]}")


def _group_members(pgid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            pass
    return out


def _interrupt_after_first_record(args: list[str], env: dict[str, str], results: Path, log: Path,
                                  wait: float) -> tuple[subprocess.Popen, Path, float, list[psutil.Process]]:
    """Start a run, Ctrl-C it (SIGINT to its process group, as a terminal does) once its first
    record is written: (process, that record, seconds it took to stop, processes left behind)."""
    proc = _start(args, env, log)
    try:
        first = _wait_for_record(proc, results / "runs", log)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        proc.wait(timeout=wait)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stragglers = _wait_group_gone(proc.pid)
    return proc, first, stopped_after, stragglers


def _wait_group_gone(pgid: int, timeout: float = 30) -> list[psutil.Process]:
    """Wait for the run's other processes (fork server, workers) to end; kill any still there."""
    deadline = time.monotonic() + timeout
    while (alive := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    return alive


def test_sigkill_of_the_main_process_then_rerun(mnist_root, bench_env, tmp_path, capsys):
    results, reference = tmp_path / "sigkill", tmp_path / "uninterrupted"
    args = run_args(mnist_root, results, *SLOW_EWC)
    log = tmp_path / "killed-run.log"
    proc = _start(args, bench_env, log)
    try:
        first = _wait_for_record(proc, results / "runs", log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # The worker of the running cell loses its fork server and stops by itself; it may
        # still be finishing (it only ever writes a whole record), so wait before rerunning.
        stragglers = _wait_group_gone(proc.pid)
    assert proc.returncode == -signal.SIGKILL
    assert not stragglers, f"processes outlived the killed run by 30 s: {stragglers}"
    assert first.name.startswith(NAIVE)
    first_bytes, first_mtime = first.read_bytes(), first.stat().st_mtime_ns
    # A worker that finished just before the kill leaves its result for a main process that is
    # gone; the next run, taking over the dead run's claim, removes it.
    assert [n for n in leftovers(results) if not n.endswith(".result.tmp")] == []
    assert list((results / "runs").glob("*.claim"))  # the dead run's claims stay until taken over
    at_kill = records(results)  # EWC was killed while training: only naive's record
    assert list(at_kill) == [first.name] and at_kill[first.name]["status"] == "ok"

    capsys.readouterr()
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "already done: mnist class-il naive seed 0" in err
    assert "naive seed 0: final accuracy" not in err  # not rerun
    assert first.read_bytes() == first_bytes and first.stat().st_mtime_ns == first_mtime
    # The same records as an uninterrupted run: same cells, bit-identical accuracy matrices.
    assert cli.main(run_args(mnist_root, reference, *SLOW_EWC)) == 0
    resumed, ref = records(results), records(reference)
    assert sorted(resumed) == sorted(ref)
    for name in ref:
        for key in SAME:
            assert resumed[name][key] == ref[name][key], (name, key)
    assert leftovers(results) == []
    assert not list((results / "runs").glob("*.claim"))


def test_ctrl_c_stops_cleanly_and_keeps_finished_records(mnist_root, bench_env, tmp_path):
    results = tmp_path / "ctrl-c"
    args = run_args(mnist_root, results, *SLOW_EWC)
    log = tmp_path / "interrupted-run.log"
    proc, first, stopped_after, stragglers = _interrupt_after_first_record(args, bench_env, results, log, 60)
    output = log.read_text()
    assert proc.returncode == cli.EXIT_INTERRUPTED, output[-3000:]
    assert stopped_after < 15, f"took {stopped_after:.1f} s to stop"
    assert not stragglers
    assert "finished: 1 ok, 0 failed, 0 already done, 0 skipped, 1 not run" in output
    assert "not run (interrupted): mnist class-il ewc seed 0" in output
    assert "Traceback" not in output
    recs = records(results)
    assert list(recs) == [first.name] and first.name.startswith(NAIVE)
    assert recs[first.name]["status"] == "ok"
    assert leftovers(results) == []


def test_sigterm_stops_the_run_and_its_workers(mnist_root, tmp_path, capsys):
    results = tmp_path / "sigterm"
    args = run_args(mnist_root, results, *SLOW_EWC)
    runs = results / "runs"

    def terminate_when_first_record_is_written():
        deadline = time.monotonic() + 120
        while not list(runs.glob("*.json")):
            if time.monotonic() > deadline:
                return  # never signal this process outside run_cells; the assertions below fail
            time.sleep(0.02)
        time.sleep(0.3)  # EWC has started
        os.kill(os.getpid(), signal.SIGTERM)  # run_cells turns it into a clean stop

    sender = threading.Thread(target=terminate_when_first_record_is_written, daemon=True)
    sender.start()
    code = cli.main(args)
    sender.join()
    err = capsys.readouterr().err
    assert code == cli.EXIT_INTERRUPTED
    assert "1 ok, 0 failed" in err and "not run (interrupted): mnist class-il ewc seed 0" in err
    assert [name.startswith(NAIVE) for name in records(results)] == [True]
    assert leftovers(results) == []
    assert cell_workers() == []  # the running worker was stopped, not left behind


def test_loading_is_safe():
    """Checkpoints and state go through torch.load(..., weights_only=True); records are JSON."""
    sources = [*(REPO_ROOT / "bench").rglob("*.py"), *(REPO_ROOT / "strategies").rglob("*.py")]
    for path in sources:
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.end(): text.find(")", match.end())]
            assert "weights_only=True" in call, f"{path}: torch.load without weights_only=True"
        if path.name in ("runner.py", "report.py", "cli.py"):
            assert "pickle" not in text, f"{path}: records must be JSON"
