"""Bad input stops `python -m bench run` with exit code 2 and a message naming the problem,
before any training and without writing a record; `table` and `plot` skip corrupt records.

Everything runs in this process through `bench.cli.main`, which returns the exit
code; no cell is trained here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST
from fakedata import idx_bytes, write_mnist

from bench import cli, report

pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the official:UserWarning")


def run_args(data_root, results, *extra: str) -> list[str]:
    return ["run", "--scenario", "class-il", "--data-root", str(data_root), "--results", str(results),
            "--no-download", *FAST, *extra]


def no_records(results: Path) -> bool:
    return not list(results.glob("**/*.json")) if results.exists() else True


@pytest.fixture
def small_mnist(tmp_path) -> Path:
    """A data root of its own (tests may damage it), 2 training and 1 test image per digit."""
    root = tmp_path / "data"
    write_mnist(root, n_train_per_class=2, n_test_per_class=1)
    return root


# ---------------------------------------------------------------- settings

BAD_SETTINGS = {
    "unknown scenario": (["--scenario", "domain-il"], ["invalid choice: 'domain-il'", "class-il", "task-il"]),
    "unknown dataset": (["--dataset", "svhn"], ["invalid choice: 'svhn'", "mnist", "cifar10", "omniglot"]),
    "unknown strategy": (["--strategies", "naive,sgd-magic"],
                         ["unknown strategy sgd-magic", "valid:", "naive", "ewc", "icarl"]),
    "strategy not for the scenario": (["--scenario", "task-il", "--strategies", "icarl"],
                                      ["icarl cannot run mnist task-il", "class-il only"]),
    "replay without memory": (["--strategies", "replay", "--memory", "0"], ["replay needs a memory budget"]),
    "negative memory": (["--memory", "-5"], ["--memory", "must be at least 0, got -5"]),
    "fractional memory": (["--memory", "2.5"], ["--memory", "expected a whole number, got '2.5'"]),
    "zero epochs": (["--epochs", "0"], ["--epochs", "must be at least 1, got 0"]),
    "fractional epochs": (["--epochs", "1.5"], ["--epochs", "expected a whole number"]),
    "zero seeds": (["--seeds", "0"], ["--seeds", "must be at least 1"]),
    "negative seed": (["--seed", "-1"], ["--seed", "must be at least 0"]),
    "fractional seeds": (["--seeds", "two"], ["--seeds", "expected a whole number, got 'two'"]),
    "fractional batch size via --set": (["--set", "batch_size=1.5"],
                                        ["batch_size must be a whole number >= 1, got 1.5"]),
    "negative memory via --set": (["--set", "memory=-3"], ["memory must be a whole number >= 0, got -3"]),
    "strategy epochs via --set": (["--set", "strategies.ewc.epochs=0"], ["strategies.ewc.epochs", "got 0"]),
    "misspelt setting": (["--set", "batchsize=16"], ["unknown setting 'batchsize'", "batch_size"]),
    "bad learning rate": (["--set", "optimizer.lr=-1"], ["optimizer.lr must be a finite number > 0"]),
    "unknown optimizer": (["--set", "optimizer.name=rmsprop"], ["optimizer.name must be one of sgd, adam"]),
    "unknown strategy section": (["--set", "strategies.ewcc.lambda=1"], ["unknown strategy ewcc"]),
    "unknown backbone": (["--set", "backbone=vgg"], ["unknown backbone 'vgg'", "mlp"]),
    "override without value": (["--set", "epochs"], ["--set expects KEY=VALUE"]),
    "icarl memory below classes": (["--strategies", "icarl", "--memory", "5"],
                                   ["icarl needs at least one exemplar per class", "5 < 10 classes"]),
    "icarl memory below classes in the full grid": (["--memory", "5"], ["icarl needs at least one exemplar"]),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_settings_exit_2_before_training(case, mnist_root, tmp_path, capsys):
    extra, expected = BAD_SETTINGS[case]
    results = tmp_path / "results"
    assert cli.main(run_args(mnist_root, results, *extra)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert "Traceback" not in err
    assert no_records(results)


# ---------------------------------------------------------------- data and results folders

def test_missing_data_root(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli.main(run_args(missing, tmp_path / "results")) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"data root {missing} does not exist" in err and "train-images-idx3-ubyte" in err
    assert no_records(tmp_path / "results") and not missing.exists()


def test_missing_file_is_named(small_mnist, tmp_path, capsys):
    (small_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    assert cli.main(run_args(small_mnist, tmp_path / "results")) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "files missing" in err and str(small_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte") in err
    assert no_records(tmp_path / "results")


def test_truncated_file_is_named(small_mnist, tmp_path, capsys):
    path = small_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert cli.main(run_args(small_mnist, tmp_path / "results")) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{path}: truncated" in err
    assert no_records(tmp_path / "results")


def test_images_of_the_wrong_shape(small_mnist, tmp_path, capsys):
    path = small_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((20, 27, 27), np.uint8)))  # 20 images, as many as labels
    assert cli.main(run_args(small_mnist, tmp_path / "results")) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "training set has images of shape (1, 27, 27), expected (1, 28, 28)" in err
    assert "train-images-idx3-ubyte" in err
    assert no_records(tmp_path / "results")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_named(small_mnist, tmp_path, capsys):
    path = small_mnist / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.chmod(0)
    try:
        assert cli.main(run_args(small_mnist, tmp_path / "results")) == cli.EXIT_USAGE
    finally:
        path.chmod(0o644)
    err = capsys.readouterr().err
    assert f"cannot read {path}" in err


@pytest.mark.parametrize("where", ["under a file", "is a file"])
def test_results_folder_that_cannot_be_written(where, mnist_root, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    results = blocker / "results" if where == "under a file" else blocker
    assert cli.main(run_args(mnist_root, results)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"cannot write records under {results}" in err
    assert blocker.read_text() == "not a folder"


# ---------------------------------------------------------------- stored records

def ok_record(strategy: str, seed: int = 0) -> dict:
    return {"status": "ok", "error": None,
            "config": {"dataset": "mnist", "scenario": "class-il", "strategy": strategy, "seed": seed,
                       "memory": 0, "epochs": 1, "backbone": "mlp", "hash": "h" + strategy},
            "acc_matrix": [[1.0, None], [0.5, 0.7]],
            "metrics": {"final_acc": 0.6, "avg_inc_acc": 0.8, "forgetting": 0.5, "bwt": -0.5},
            "time_s": 1.0, "peak_rss_mb": 100.0, "params": 10, "extra_state_bytes": 0, "device": "cpu",
            "threads": 1, "code": report.current_code(strategy)}


@pytest.fixture
def damaged_results(tmp_path) -> tuple[Path, list[Path]]:
    """Two good records and three unusable ones: not JSON, cut short, missing fields."""
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    (runs / "naive_seed0.json").write_text(json.dumps(ok_record("naive")))
    (runs / "ewc_seed0.json").write_text(json.dumps(ok_record("ewc")))
    bad = [runs / "garbage.json", runs / "naive_seed1_cut.json", runs / "naive_seed2_fields.json"]
    bad[0].write_text("this is not json {")
    bad[1].write_text(json.dumps(ok_record("naive", 1))[:80])
    bad[2].write_text(json.dumps({k: v for k, v in ok_record("naive", 2).items() if k != "acc_matrix"}))
    return tmp_path / "results", bad


def test_table_skips_corrupt_records_by_name(damaged_results, capsys):
    results, bad = damaged_results
    assert cli.main(["table", "--results", str(results)]) == 0
    out, err = capsys.readouterr()
    for path in bad:
        assert f"skipping {path}" in err
    assert "not valid JSON" in err and "acc_matrix" in err
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert rows["naive"].rstrip(" |").endswith("1")  # one seed: the broken ones are not counted
    assert "60.00" in rows["naive"] and "60.00" in rows["ewc"]
    assert (results / "tables" / "mnist_class-il.md").is_file()


def test_plot_skips_corrupt_records_by_name(damaged_results, capsys):
    results, bad = damaged_results
    assert cli.main(["plot", "--results", str(results)]) == 0
    out, err = capsys.readouterr()
    for path in bad:
        assert f"skipping {path}" in err
    assert out.strip() and all(Path(line).is_file() for line in out.split())


def test_table_without_records(tmp_path, capsys):
    assert cli.main(["table", "--results", str(tmp_path / "empty")]) == cli.EXIT_USAGE
    assert "no records" in capsys.readouterr().err


def test_resume_trusts_only_whole_ok_records_of_the_same_config(mnist_root, tmp_path):
    results = tmp_path / "results"
    args = run_args(mnist_root, results, "--strategies", "naive,ewc")

    def done() -> dict[str, bool]:
        planned, _ = cli.plan(cli.build_parser().parse_args(args))
        return {cell.config["strategy"]: is_done for cell, is_done in planned}

    planned, _ = cli.plan(cli.build_parser().parse_args(args))
    naive, ewc = (cell for cell, _ in planned)
    assert done() == {"naive": False, "ewc": False}
    record = {**ok_record("naive"), "config": naive.config}
    naive.path.write_text(json.dumps(record))
    ewc.path.write_text(json.dumps({**record, "config": ewc.config})[:100])  # cut short
    assert done() == {"naive": True, "ewc": False}
    naive.path.write_text(json.dumps({**record, "config": {**naive.config, "hash": "other"}}))
    assert done() == {"naive": False, "ewc": False}
    naive.path.write_text(json.dumps({**record, "status": "failed"}))
    assert done() == {"naive": False, "ewc": False}
    naive.path.write_text(json.dumps(record))
    args.append("--force")
    assert done() == {"naive": False, "ewc": False}
    # Settings that change the result change the hash, hence the record's name.
    other, _ = cli.plan(cli.build_parser().parse_args(args + ["--set", "optimizer.lr=0.01"]))
    assert other[0][0].path != naive.path


def test_list_and_help_return_codes(capsys):
    assert cli.main(["list"]) == 0
    assert "icarl" in capsys.readouterr().out
    assert cli.main(["run", "--help"]) == 0
    assert "--threads" in capsys.readouterr().out
    assert cli.main([]) == cli.EXIT_USAGE
