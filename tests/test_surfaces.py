"""The newer surfaces as solid as the runner (issue #29, items 4, 6, 7, 8, 9).

Omniglot's layout against the official counts, Dask's connect and a lost scheduler, the loggers'
checks and failures, reports on records of the wrong shape, and the last bad inputs: each case
exits 2 before training with a message that says what to change, or keeps what was trained.
Disk-full cases run on a tiny tmpfs mounted here (root, where mounting works; skipped otherwise).
Dask cases use 127.0.0.1 only and stop every process they start.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import FAST, REPO_ROOT, leftovers, records
from fakedata import write_omniglot
from test_report import IB_PER_TASK, make_record

from bench import cli
from bench import datasets as D
from bench.omniglot_official import ALPHABETS, FOLDER_MD5
from bench.records import record_path

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning",
                                        "ignore::DeprecationWarning", "ignore::ResourceWarning")


def run_args(data_root: Path, results: Path, *extra: str, dataset: str = "mnist") -> list[str]:
    return ["run", "--scenario", "class-il", "--dataset", dataset, "--strategies", "naive",
            "--data-root", str(data_root), "--results", str(results), "--no-download", "--jobs", "1",
            *FAST, *extra]


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str):
    """A tmpfs of `size` mounted at `folder` (a disk that fills up); skips the test where mounting fails."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Write a ballast file in `folder` until its file system is full."""
    with open(folder / "ballast", "wb", buffering=0) as f:  # unbuffered: closing has nothing left to flush
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


# ---------------------------------------------------------------- item 4: Omniglot's layout

def test_official_omniglot_table_has_the_published_counts():
    assert {top: len(a) for top, a in ALPHABETS.items()} == {"images_background": 30, "images_evaluation": 20}
    assert {top: sum(n for n, _ in a.values()) for top, a in ALPHABETS.items()} == \
        {"images_background": 964, "images_evaluation": 659}
    assert set(FOLDER_MD5) == set(ALPHABETS)


def _alphabet_md5(folder: Path) -> str:
    """The md5 bench.datasets documents: each PNG's path relative to `folder`, NUL, size, NUL, bytes."""
    h = hashlib.md5()
    for path in sorted(folder.rglob("*.png"), key=lambda p: p.relative_to(folder).as_posix()):
        data = path.read_bytes()
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def test_an_incomplete_official_omniglot_exits_2_naming_what_differs(tmp_path, monkeypatch, capsys, bench_cache):
    """One alphabet missing trained 49 tasks as "the official files"; generated data stay usable."""
    fake = write_omniglot(tmp_path, n_alphabets_background=3, n_alphabets_evaluation=2, chars_per_alphabet=2)
    # This generated release plays the official one: its layout and md5s become the official table.
    official = {top: {a.name: (len(list(a.iterdir())), _alphabet_md5(a)) for a in sorted((fake.path / top).iterdir())}
                for top in ("images_background", "images_evaluation")}
    monkeypatch.setattr(D, "_OMNIGLOT_OFFICIAL", official)
    monkeypatch.setattr(D, "_OMNIGLOT_MD5", {top: _alphabet_md5(fake.path / top) for top in official})
    full = D.load_dataset("omniglot", tmp_path, download=False)
    assert full.official and len(full.task_names) == 5

    gone = fake.path / "images_evaluation" / fake.task_names[-1]
    shutil.rmtree(gone)
    short = fake.path / "images_background" / fake.task_names[0] / "character02"
    next(short.glob("*_07.png")).unlink()
    results = tmp_path / "results"
    assert cli.main(run_args(tmp_path, results, dataset="omniglot")) == 2
    err = capsys.readouterr().err
    assert "an incomplete copy of the official Omniglot" in err
    assert "images_evaluation has 1 alphabets and 2 characters, the official release 2 and 4" in err
    assert f"images_evaluation: alphabet(s) missing: {gone.name}" in err
    assert f"images_background/{fake.task_names[0]}: characters without the official 20 drawings: " \
           "character02 (19)" in err
    assert not (results / "runs").exists() or records(results) == {}

    # Data none of whose alphabets are official (as the tests' generated data) load, flagged unofficial.
    monkeypatch.setattr(D, "_OMNIGLOT_OFFICIAL", {top: {} for top in official})
    with pytest.warns(UserWarning, match="differs from the official"):
        partial = D.load_dataset("omniglot", tmp_path, download=False)
    assert not partial.official and len(partial.task_names) == 4


# ---------------------------------------------------------------- item 6: Dask

distributed = pytest.importorskip("distributed")
from bench import dask_executor  # noqa: E402  (needs distributed)
from bench.runner import Cell  # noqa: E402


@pytest.fixture
def silent_port():
    """A port on 127.0.0.1 that accepts TCP connections and never says a word (a dashboard, say)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def serve():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()
    thread.join(5)


def test_a_port_that_is_not_a_scheduler_exits_2_and_junk_leaves_no_traceback(
        silent_port, mnist_root, tmp_path, bench_env):
    """The client handshake hung forever there; `junk` exited 2, then hung and printed a traceback."""
    silent = f"tcp://127.0.0.1:{silent_port}"
    for where, env in ((["--scheduler", silent], bench_env),
                       ([], {**bench_env, "BENCH_DASK_SCHEDULER": "junk"})):
        args = run_args(mnist_root, tmp_path / "results", "--executor", "dask", *where)
        done = subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert "cannot reach the Dask scheduler at junk" in done.stderr
    with pytest.raises(dask_executor.SchedulerUnreachable, match=f"no Dask scheduler answered at {silent} within"):
        dask_executor.check_scheduler(silent, timeout=1)


def test_the_embedded_cluster_starts_no_more_workers_than_cells(monkeypatch, tmp_path):
    started = []

    class Stop(Exception):
        pass

    def spy(*args, n_workers, **kwargs):
        started.append(n_workers)
        raise Stop  # nothing is started: the number asked for is the point

    monkeypatch.setattr(dask_executor, "LocalCluster", spy)
    with pytest.raises(Stop):
        dask_executor.run_cells([Cell({}, tmp_path / "a.json")], "data", jobs=4, progress=False)
    assert started == [1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cells_lost_with_the_scheduler_are_not_run_not_failed(mnist_root, tmp_path, bench_env, monkeypatch, capsys):
    """A scheduler killed mid-run stored every cell it took with it as FAILED."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**bench_env, "PYTHONPATH": str(REPO_ROOT), "PYTHONWARNINGS": "ignore"}
    common = dict(cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                  start_new_session=True)
    dask = [sys.executable, "-m", "dask"]
    scheduler = subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                  "--no-dashboard"], **common)
    worker = subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                               "--no-dashboard", "--memory-limit", "0"], **common)
    real = dask_executor.as_completed

    def kill_scheduler_then_wait(futures, **kwargs):  # every cell is sent, none can have finished
        os.killpg(scheduler.pid, signal.SIGKILL)
        scheduler.wait()
        return real(futures, **kwargs)

    try:
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=120)
        monkeypatch.setattr(dask_executor, "as_completed", kill_scheduler_then_wait)
        results = tmp_path / "results"
        code = cli.main(run_args(mnist_root, results, "--seeds", "2", "--executor", "dask", "--scheduler", address))
        err = capsys.readouterr().err
        assert code == 1, err
        assert "finished: 0 ok, 0 failed" in err and "2 not run" in err
        assert err.count("not run (lost with the Dask scheduler)") == 2
        assert records(results) == {} and leftovers(results) == []
    finally:
        for proc in (worker, scheduler):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ---------------------------------------------------------------- item 7: loggers

def test_unwritable_logs_or_unreachable_wandb_exit_2_before_training(mnist_root, tmp_path, monkeypatch, capsys):
    """An unwritable log folder turned cells into FAILED records; W&B online without network stalled."""
    results = tmp_path / "results"
    results.mkdir()
    (results / "logs").write_text("not a folder")
    assert cli.main(run_args(mnist_root, results, "--log", "csv")) == 2
    assert f"--log: cannot write the logs under {results / 'logs'}" in capsys.readouterr().err
    assert records(results) == {}

    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    other = tmp_path / "other"
    assert cli.main(run_args(mnist_root, other, "--log", "wandb")) == 2
    err = capsys.readouterr().err
    assert "--log wandb: W&B is set to log online" in err and "WANDB_MODE=offline" in err
    assert records(other) == {}


def test_a_full_log_disk_keeps_the_trained_result_and_marks_its_logs_missing(mnist_root, tmp_path, capsys):
    results = tmp_path / "results"
    with tiny_tmpfs(results / "logs", "4k"):
        assert cli.main(run_args(mnist_root, results, "--log", "text")) == 0
        err = capsys.readouterr().err
    [record] = records(results).values()
    assert record["status"] == "ok"
    assert any("No space left on device" in m for m in record["logs_missing"]), record["logs_missing"]
    assert "its logs are incomplete (text: " in err and "the result is stored" in err


# ---------------------------------------------------------------- item 8: reports on stored records

def _ib(seed: int, **changes) -> dict:
    record = make_record("ib", seed, 0.9 + seed / 100, per_task=json.loads(json.dumps(IB_PER_TASK)))
    record.update(changes)
    return record


def _without_params(seed: int) -> dict:
    record = _ib(seed)
    del record["params"]
    return record


BAD_RECORDS = {  # what a hostile or damaged record holds -> what the warning says of its file
    "per_task of the wrong shape": (_ib(2, per_task=[[1, 2], [3]]), "'per_task' is not a list of objects"),
    "per_task widths of two lengths": (_ib(2, per_task=[{"widths": [400, 200]}, {"widths": [400]}]),
                                       "'per_task[].widths' has lists of different lengths"),
    "per_task.active not a list": (_ib(2, per_task=[{"active": 7, "widths": [400, 200]}]),
                                   "'per_task[].active' is not a list of finite numbers"),
    "IB without params": (_without_params(2), "IB's network line leaves out"),
    "IB of another depth": (_ib(2, per_task=[{"active": [1], "widths": [400]}]), "a number of layers unlike"),
    "train_curves not lists": (_ib(2, train_curves=[{"loss": 5, "acc": 1}]),
                               "'train_curves' holds 'loss' and 'acc' that are not number lists"),
    "train_curves not a list": (_ib(2, train_curves={"loss": [1.0]}), "'train_curves' is not a list"),
    "a huge seed": (_ib(2**70), "'config.seed' is not a whole number in 0..2**32-1"),
}


LINE_ONLY = ("IB without params", "IB of another depth")  # valid records that only IB's network line cannot read


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_reports_never_crash_on_a_stored_record(case, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    good = [_ib(0), _ib(1), make_record("ewc", 0, 0.8), make_record("ewc", 1, 0.82), make_record("naive", 0, 0.2)]
    bad, warning = BAD_RECORDS[case]
    for record in [*good, bad]:
        record_path(tmp_path, record["config"]).write_text(json.dumps(record))
    name = record_path(tmp_path, bad["config"]).name
    for command in ("table", "plot"):
        assert cli.main([command, "--results", str(tmp_path)]) == 0, command
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if command == "table" or case not in LINE_ONLY:
            assert warning in err and name in err, err
    assert "IB's network (mean over 2 seeds)" in (tmp_path / "tables" / "mnist_class-il.md").read_text()


# ---------------------------------------------------------------- item 9: the last bad inputs

@pytest.mark.parametrize("extra, expected", [
    (["--set", "optimizer.nesterov=true"], "unknown setting optimizer.nesterov; valid: optimizer.name"),
    (["--set", "strategies.naive.optimizer.betas=1"], "unknown setting strategies.naive.optimizer.betas"),
    (["--holdout", "0.999"], "--holdout 0.999 holds out every training image of 10 class(es)"),
], ids=["optimizer key", "strategy optimizer key", "near-1 holdout"])
def test_bad_settings_exit_2_before_training(extra, expected, mnist_root, tmp_path, capsys):
    results = tmp_path / "results"
    assert cli.main(run_args(mnist_root, results, *extra)) == 2
    assert expected in capsys.readouterr().err
    assert records(results) == {}


def test_a_file_as_data_root_says_it_is_a_file(tmp_path, capsys):
    root = tmp_path / "data.tar"
    root.write_text("an archive, not the folder")
    assert cli.main(run_args(root, tmp_path / "results")) == 2
    assert f"data root {root} is a file, not a folder" in capsys.readouterr().err


def test_a_full_results_disk_gives_a_clear_error_and_a_summary(mnist_root, tmp_path, monkeypatch, capsys):
    """It ended in an unhandled OSError and the later seeds were dropped without a word."""
    from bench import runner

    results = tmp_path / "results"
    real_claim = runner.claim_cell

    def claim_then_fill(cell, *args, **kwargs):  # the disk fills up once the run has begun
        state = real_claim(cell, *args, **kwargs)
        if not (results / "ballast").exists():
            fill(results)
        return state

    with tiny_tmpfs(results, "256k"):
        monkeypatch.setattr(runner, "claim_cell", claim_then_fill)
        assert cli.main(run_args(mnist_root, results, "--seeds", "2")) == 1
        err = capsys.readouterr().err
        assert "error: cannot write the record of mnist class-il naive seed 0" in err
        assert "No space left on device" in err
        assert "finished: 0 ok, 0 failed" in err and "2 not run" in err
        assert "not run (its record could not be written): mnist class-il naive seed 1" in err
        assert "free space under" in err
        assert records(results) == {}
