"""`bench run --log`: Avalanche's loggers watch a cell; what they log agrees with the record.

One tiny cell is trained once for the whole module (a subprocess, as a user runs it).
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
from conftest import FAST, records, run_bench

from bench import cli

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning")


def run_args(data_root: Path, results: Path, *extra: str) -> list[str]:
    return ["run", "--scenario", "class-il", "--strategies", "naive", "--data-root", str(data_root),
            "--results", str(results), "--no-download", "--jobs", "1", *FAST, *extra]


@pytest.fixture(scope="module")
def logged(mnist_root, tmp_path_factory, bench_cache):
    """A naive Class-IL cell trained with every logger: (results folder, record, its log folder, env)."""
    import os

    env = {**os.environ, "BENCH_CACHE_DIR": str(bench_cache), "PYTHONWARNINGS": "ignore", "WANDB_MODE": "offline"}
    results = tmp_path_factory.mktemp("logged")
    done = run_bench(run_args(mnist_root, results, "--log", "csv,tensorboard,wandb,text"), env)
    assert done.returncode == 0, done.stderr
    (name, record), = records(results).items()
    return results, record, results / "logs" / Path(name).stem, env


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_csv_accuracies_after_the_last_task_equal_the_records_last_row(logged):
    _, record, folder, _ = logged
    rows = read_csv(folder / "csv" / "eval_results.csv")
    last = str(len(record["acc_matrix"]) - 1)
    logged_last = {int(r["eval_exp"]): float(r["eval_accuracy"]) for r in rows if r["training_exp"] == last}
    expected = record["acc_matrix"][-1]
    assert sorted(logged_last) == list(range(len(expected)))
    for j, acc in enumerate(expected):  # Avalanche's CSV keeps 4 decimals
        assert logged_last[j] == pytest.approx(acc, abs=5.1e-5)


def test_record_has_the_per_epoch_curves_avalanche_logs(logged):
    _, record, folder, _ = logged
    curves = record["train_curves"]
    assert len(curves) == len(record["acc_matrix"]) == 5
    assert all(len(c["loss"]) == len(c["acc"]) == record["config"]["epochs"] for c in curves)
    rows = read_csv(folder / "csv" / "training_results.csv")
    assert [float(r["training_accuracy"]) for r in rows] == \
        pytest.approx([a for c in curves for a in c["acc"]], abs=5.1e-5)
    assert [float(r["training_loss"]) for r in rows] == \
        pytest.approx([v for c in curves for v in c["loss"]], abs=5.1e-5)


def test_tensorboard_event_files_hold_the_per_experience_accuracies(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, record, folder, _ = logged
    events = list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(folder / "tensorboard"))
    acc.Reload()
    tags = [t for t in acc.Tags()["scalars"] if t.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    assert len(tags) == 5
    for j, tag in enumerate(sorted(tags)):  # the last value is the one after the last task
        assert acc.Scalars(tag)[-1].value == pytest.approx(record["acc_matrix"][-1][j], abs=1e-6)


def test_text_and_offline_wandb_logs(logged):
    _, record, folder, _ = logged
    text = (folder / "log.txt").read_text()
    assert f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp004 = {record['acc_matrix'][-1][4]:.4f}" in text
    runs = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_log_on_a_finished_cell_trains_nothing_and_says_so(logged, mnist_root):
    results, record, _, env = logged
    again = run_bench(run_args(mnist_root, results, "--log", "csv"), env)
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stderr and "--force" in again.stderr
    (stored,) = records(results).values()
    assert stored["run_id"] == record["run_id"]  # not retrained


@pytest.mark.parametrize("value,expected", [("csv,mlflow", "unknown logger mlflow"),
                                            ("text,wandb", "pip install wandb")])
def test_bad_log_exits_2_before_training(value, expected, mnist_root, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code = cli.main(run_args(mnist_root, tmp_path / "r", "--log", value))
    assert code == cli.EXIT_USAGE
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_log_is_refused_where_workers_do_not_share_the_results_folder():
    cli.check_log_executor((), "dask", shared_results=False)
    cli.check_log_executor(("csv",), "dask", shared_results=True)
    cli.check_log_executor(("csv",), "local", shared_results=False)
    with pytest.raises(cli.UsageError, match="--log"):
        cli.check_log_executor(("csv",), "dask", shared_results=False)
