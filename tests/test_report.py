"""Tests for bench.report: tables and plots rebuilt from hand-made run records.

The records are synthetic JSON with known numbers, so every expected cell of
the tables can be written down exactly; nothing is trained.
"""
from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_record(strategy: str, seed: int, final_acc: float = 0.9, *, status: str = "ok",
                dataset: str = "mnist", scenario: str = "class-il", memory: int = 200,
                epochs: int = 2, config_hash: str | None = None, per_task=None,
                time_s: float = 10.0, extra: int = 2_000_000) -> dict:
    """A run record; accuracy matrix over 2 tasks whose last row averages to final_acc."""
    config = {"dataset": dataset, "scenario": scenario, "strategy": strategy, "seed": seed,
              "memory": memory, "epochs": epochs, "backbone": "mlp",
              "hash": config_hash or f"{strategy}-{memory}-{epochs}"}
    if status != "ok":
        return {"status": status, "error": "CUDA out of memory", "config": config,
                "acc_matrix": None, "metrics": None, "time_s": 1.0}
    record = {
        "status": "ok", "error": None, "config": config,
        "acc_matrix": [[1.0, None], [final_acc - 0.05, final_acc + 0.05]],
        "metrics": {"final_acc": final_acc, "avg_inc_acc": (1.0 + final_acc) / 2,
                    "forgetting": 0.1, "bwt": -0.1},
        "time_s": time_s, "peak_rss_mb": 900.0, "params": 1000, "extra_state_bytes": extra,
        "device": "cpu", "code": report.current_code(strategy),
    }
    if per_task is not None:
        record["per_task"] = per_task
    return record


def write(runs: Path, name: str, payload) -> None:
    path = runs / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))


IB_PER_TASK = [{"active": [100, 50], "widths": [400, 200], "grown": [0, 0], "params": 10, "sparsity": 70.0},
               {"active": [200, 100], "widths": [400, 200], "grown": [0, 0], "params": 20, "sparsity": 50.0}]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results directory covering every case the report must handle."""
    runs = tmp_path / "runs"
    write(runs, "replay_s0.json", make_record("replay", 0, 0.80, time_s=10.0))
    write(runs, "replay_s1.json", make_record("replay", 1, 0.90, time_s=20.0))
    write(runs, "naive_s0.json", make_record("naive", 0, 0.50))
    write(runs, "nested/ewc_s0.json", make_record("ewc", 0, 0.70))   # found recursively
    write(runs, "nested/ewc_s1.json", make_record("ewc", 1, status="failed"))
    write(runs, "lwf_e2.json", make_record("lwf", 0, 0.60, epochs=2))
    write(runs, "lwf_e10.json", make_record("lwf", 0, 0.65, epochs=10))
    write(runs, "gem_s0.json", make_record("gem", 0, 0.55))  # not in the fixed order
    write(runs, "ib_s0.json", make_record("ib", 0, 0.95, per_task=IB_PER_TASK))
    write(runs, "cifar_naive.json", make_record("naive", 0, 0.30, dataset="cifar10", scenario="task-il"))
    write(runs, "broken.json", '{"status": "ok", "config": {')
    write(runs, "nohash.json", {"status": "ok", "config": {"dataset": "mnist", "scenario": "class-il",
                                                           "strategy": "naive", "seed": 3}})
    no_metrics = make_record("naive", 4)
    del no_metrics["metrics"]["bwt"]
    write(runs, "nobwt.json", no_metrics)
    write(runs, "alist.json", [1, 2, 3])
    return tmp_path


def table_rows(md: str) -> dict[str, list[str]]:
    """The first Markdown pipe table's body rows keyed by their first cell (the pairs table follows)."""
    lines = list(itertools.takewhile(lambda l: l.startswith("|"),
                                     itertools.dropwhile(lambda l: not l.startswith("|"), md.splitlines())))[2:]
    cells = [[c.strip() for c in l.strip("|").split(" | ")] for l in lines]
    return {row[0]: row[1:] for row in cells}


def test_load_records_skips_invalid_files_and_names_them(results: Path, capsys) -> None:
    records, skipped = report.load_records(results)
    err = capsys.readouterr().err
    assert len(records) == 10
    reasons = {Path(p).name: r for p, r in skipped}
    assert set(reasons) == {"broken.json", "nohash.json", "nobwt.json", "alist.json"}
    assert "not valid JSON" in reasons["broken.json"]
    assert "config.hash" in reasons["nohash.json"]
    assert "metrics.bwt" in reasons["nobwt.json"]
    assert "not a JSON object" in reasons["alist.json"]
    for name in reasons:
        assert name in err


def test_missing_runs_directory_gives_nothing(tmp_path: Path) -> None:
    assert report.load_records(tmp_path) == ([], [])
    assert report.write_tables(tmp_path) == []


def test_summary_frame_statistics(results: Path) -> None:
    records, _ = report.load_records(results)
    frame = report.summary_frame(records)
    mnist = frame[frame["dataset"] == "mnist"]
    # records without `shared_replay` are named by the strategy's declared memory kind
    assert list(mnist["label"]) == ["naive", "replay", "ewc + replay", "lwf + replay (epochs 2)",
                                    "lwf + replay (epochs 10)", "ib + replay", "gem"]
    replay = mnist.set_index("label").loc["replay"]
    assert replay["n_seeds"] == 2 and replay["n_failed"] == 0
    assert replay["final_acc_mean"] == pytest.approx(0.85)
    assert replay["final_acc_std"] == pytest.approx(math.sqrt(0.005))  # ddof=1
    assert replay["time_s_mean"] == pytest.approx(15.0)
    assert replay["memory"] == 200 and replay["epochs"] == 2
    ewc = mnist.set_index("label").loc["ewc + replay"]
    assert ewc["n_seeds"] == 2 and ewc["n_failed"] == 1
    naive = mnist.set_index("label").loc["naive"]
    assert math.isnan(naive["final_acc_std"])  # undefined with one seed


def test_tables_in_three_formats(results: Path) -> None:
    paths = report.write_tables(results)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{s}.{ext}" for s in ("mnist_class-il", "cifar10_task-il")
                           for ext in ("md", "csv", "tex"))
    assert all(p.parent == results / "tables" and p.stat().st_size > 0 for p in paths)
    assert not list((results / "tables").glob("*.tmp"))

    md = (results / "tables" / "mnist_class-il.md").read_text()
    caption = md.splitlines()[0]
    assert caption.startswith("Split-MNIST, Class-IL, 2 tasks. Memory budget: 200 exemplars.")
    assert "Training: 2 or 10 epochs per task (differing between rows), backbone mlp, seeds 0-1" in caption
    assert "mean ± std over seeds" in caption and "ddof=1" in caption
    rows = table_rows(md)
    assert list(rows) == ["naive", "replay", "ewc + replay", "lwf + replay (epochs 2)",
                          "lwf + replay (epochs 10)", "ib + replay", "gem"]
    header = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    assert header == ["Strategy", "Final acc (%)", "Avg inc. acc (%)", "Forgetting (%)", "BWT (%)",
                      "Time (s)", "Params", "Extra state (MB)", "Memory (exemplars)", "Held (max)", "Seeds"]
    assert rows["replay"] == ["85.00 ± 7.07", "92.50 ± 3.54", "10.00 ± 0.00", "-10.00 ± 0.00",
                              "15.0 ± 7.1", "1,000", "2.00 ± 0.00", "200", "–", "2"]
    assert rows["naive"][:2] == ["50.00", "75.00"]  # one seed: mean only
    assert rows["naive"][-1] == "1"
    assert rows["lwf + replay (epochs 2)"][0] == "60.00" and rows["lwf + replay (epochs 10)"][0] == "65.00"
    # every pair under the Markdown table (bench/pairwise.py), not in the LaTeX caption
    assert "All pairs (joint not counted)" in md and "<details><summary>Every pair</summary>" in md
    assert "All pairs" not in (results / "tables" / "mnist_class-il.tex").read_text()


def test_a_table_whose_records_are_gone_is_removed_and_other_tables_are_kept(results: Path) -> None:
    report.write_tables(results)
    tables = results / "tables"
    (tables / "compression-x.md").write_text("made by another script\n")
    (results / "runs" / "cifar_naive.json").unlink()  # the cifar10 table's only record
    names = sorted(p.name for p in report.write_tables(results))
    assert names == sorted(f"mnist_class-il.{ext}" for ext in ("md", "csv", "tex"))
    assert sorted(p.name for p in tables.iterdir()) == sorted(names + ["compression-x.md"])


def test_failed_seed_never_becomes_numbers(results: Path) -> None:
    report.write_tables(results)
    tables = results / "tables"
    ewc = table_rows((tables / "mnist_class-il.md").read_text())["ewc + replay"]
    assert ewc[:7] == ["failed (1/2)"] * 7
    assert ewc[-1] == "2"
    assert "70.00" not in " ".join(ewc)

    with open(tables / "mnist_class-il.csv", newline="") as fh:
        by_label = {row["label"]: row for row in csv.DictReader(fh)}
    assert by_label["ewc + replay"]["status"] == "failed" and by_label["ewc + replay"]["n_failed"] == "1"
    assert by_label["ewc + replay"]["final_acc_mean"] == "" and by_label["ewc + replay"]["time_s_mean"] == ""
    assert by_label["replay"]["status"] == "ok"

    tex = (tables / "mnist_class-il.tex").read_text()
    ewc_line = next(l for l in tex.splitlines() if l.startswith("ewc + replay &"))
    assert ewc_line.count("failed (1/2)") == 7


def test_csv_is_machine_readable(results: Path) -> None:
    report.write_tables(results)
    with open(results / "tables" / "mnist_class-il.csv", newline="") as fh:
        by_label = {row["label"]: row for row in csv.DictReader(fh)}
    replay = by_label["replay"]
    assert float(replay["final_acc_mean"]) == pytest.approx(0.85)
    assert float(replay["final_acc_std"]) == pytest.approx(0.0707107, abs=1e-6)
    assert replay["memory"] == "200" and replay["n_seeds"] == "2"
    assert by_label["naive"]["final_acc_std"] == ""
    assert by_label["lwf + replay (epochs 10)"]["epochs"] == "10"


def test_latex_table_is_escaped(results: Path) -> None:
    report.write_tables(results)
    tex = (results / "tables" / "mnist_class-il.tex").read_text()
    assert "\\begin{tabular}{lrrrrrrrrrr}" in tex and "\\end{tabular}" in tex
    assert "Final acc (\\%)" in tex
    assert "85.00 $\\pm$ 7.07" in tex
    assert "±" not in tex.split("\\begin{tabular}")[1]
    assert all(line.startswith("% ") or line == "%" for line in tex.split("\\begin{tabular}")[0].splitlines())
    import pandas as pd
    odd = report.latex_table(pd.DataFrame({"Strategy": ["a_b{x}\\ 50%", "c"], "Final acc (%)": ["1 ± 2", "–"]}))
    assert "a\\_b\\{x\\}\\textbackslash \\space 50\\% & 1 $\\pm$ 2" in odd and "c & --" in odd


def test_extra_state_in_kb_when_small(tmp_path: Path) -> None:
    write(tmp_path / "runs", "a.json", make_record("replay", 0, 0.8, extra=1500))
    report.write_tables(tmp_path)
    md = (tmp_path / "tables" / "mnist_class-il.md").read_text()
    assert "Extra state (KB)" in md
    assert table_rows(md)["replay"][6] == "1.5"


def test_markdown_table_generic_frame() -> None:
    import pandas as pd
    text = report.markdown_table(pd.DataFrame({"name": ["a|b", "c"], "value": [1.5, float("nan")]}))
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["name", "value"]
    assert lines[1].replace("-", "") == "|:|:|"  # names left, numbers right
    assert lines[2].split(" | ")[0].rstrip() == "| a\\|b" and lines[2].rstrip(" |").endswith("1.5")  # pipe escaped
    assert lines[3].replace(" ", "") == "|c||"


def test_markdown_table_of_summary_frame(results: Path) -> None:
    records, _ = report.load_records(results)
    text = report.markdown_table(report.summary_frame(records))
    header = text.splitlines()[0]
    assert header.startswith("| Dataset") and "Final acc (%)" in header  # several tables: key columns
    assert "cifar10" in text and "85.00 ± 7.07" in text


def test_curve_and_active_fraction_values() -> None:
    record = make_record("ib", 0, 0.8, per_task=IB_PER_TASK)
    matrix = report.acc_matrix(record)
    assert matrix.shape == (2, 2) and math.isnan(matrix[0, 1])
    np.testing.assert_allclose(report.average_accuracy_curve(matrix), [100.0, 80.0])
    np.testing.assert_allclose(report.active_fractions(record), [[0.25, 0.25], [0.5, 0.5]])
    assert report.active_fractions(make_record("ewc", 0)) is None
    # a grown layer: counted against its width at the first task, so the growth shows (1.5, not ~1)
    grown = IB_PER_TASK + [{"active": [600, 150], "widths": [610, 200], "grown": [210, 0]}]
    np.testing.assert_allclose(report.active_fractions(make_record("ib", 0, per_task=grown))[-1], [1.5, 0.75])


def test_plots_are_valid_pngs(results: Path) -> None:
    paths = report.write_plots(results)
    plots = results / "plots"
    names = {p.name for p in paths}
    lwf = sorted(n for n in names if n.startswith("mnist_class-il_lwf_"))
    assert len(lwf) == 2 and all(n.endswith("_matrix.png") for n in lwf)  # one per config hash
    expected = {"mnist_class-il_curves.png", "cifar10_task-il_curves.png",
                "mnist_class-il_cost.png", "cifar10_task-il_cost.png",
                "mnist_class-il_naive_matrix.png", "mnist_class-il_replay_matrix.png",
                "mnist_class-il_ewc_matrix.png", "mnist_class-il_ib_matrix.png",
                "mnist_class-il_gem_matrix.png", "cifar10_task-il_naive_matrix.png",
                "mnist_class-il_ib_active.png"}
    assert names == expected | set(lwf)
    assert [n for n in names if n.endswith("_active.png")] == ["mnist_class-il_ib_active.png"]
    for path in paths:
        data = path.read_bytes()
        assert path.parent == plots and len(data) > 1000 and data[:8] == PNG_MAGIC
    assert not list(plots.glob("*.tmp"))


def test_all_failed_cell_has_no_plot(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write(runs, "a.json", make_record("ewc", 0, status="failed"))
    write(runs, "b.json", make_record("naive", 0, 0.5))
    names = {p.name for p in report.write_plots(tmp_path)}
    assert names == {"mnist_class-il_curves.png", "mnist_class-il_cost.png", "mnist_class-il_naive_matrix.png"}


def test_config_hash_labels_when_no_visible_difference(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write(runs, "a.json", make_record("ewc", 0, 0.7, config_hash="aaaa11112222"))
    write(runs, "b.json", make_record("ewc", 0, 0.6, config_hash="bbbb11112222"))
    write(runs, "c.json", make_record("ewc", 0, 0.5, memory=0, config_hash="cccc11112222"))
    records, _ = report.load_records(tmp_path)
    labels = list(report.summary_frame(records)["label"])
    # the name tells the memory-free row from the ones with the buffer; the hash tells those two apart
    assert labels == ["ewc", "ewc + replay (hash aaaa11112222)", "ewc + replay (hash bbbb11112222)"]
    write(runs, "c.json", make_record("ewc", 0, 0.5, config_hash="cccc11112222"))
    records, _ = report.load_records(tmp_path)
    assert list(report.summary_frame(records)["label"]) == [
        "ewc + replay (hash aaaa11112222)", "ewc + replay (hash bbbb11112222)",
        "ewc + replay (hash cccc11112222)"]


def test_import_is_light() -> None:
    import subprocess
    import sys
    code = ("import sys, bench.report; "
            "heavy = [m for m in ('torch', 'avalanche', 'matplotlib') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_joint_upper_bound_has_one_row_and_no_forgetting(tmp_path: Path) -> None:
    """Joint training is evaluated once, after all tasks: forgetting and BWT show as missing."""
    joint = make_record("joint", 0, 0.95)
    joint["acc_matrix"] = [[0.96, 0.94]]
    joint["metrics"] = {"final_acc": 0.95, "avg_inc_acc": None, "forgetting": None, "bwt": None}
    write(tmp_path / "runs", "joint.json", joint)
    records, skipped = report.load_records(tmp_path)
    assert len(records) == 1 and skipped == []
    report.write_tables(tmp_path)
    row = table_rows((tmp_path / "tables" / "mnist_class-il.md").read_text())["joint"]
    assert row[0] == "95.00"
    assert row[1:4] == [report.MISSING] * 3
    # a multi-row matrix must still carry every metric
    broken = make_record("naive", 0)
    broken["metrics"]["forgetting"] = None
    write(tmp_path / "runs", "naive.json", broken)
    assert len(report.load_records(tmp_path)[1]) == 1


def test_learning_curves_from_the_record(tmp_path: Path) -> None:
    record = make_record("naive", 0)
    record["train_curves"] = [{"loss": [2.0, 1.0], "acc": [0.5, 0.75]}, {"loss": [3.0, 0.5], "acc": [0.25, 1.0]}]
    loss, acc, epochs = report.learning_curves(record)
    np.testing.assert_allclose(loss, [2.0, 1.0, 3.0, 0.5])
    np.testing.assert_allclose(acc, [50.0, 75.0, 25.0, 100.0])
    assert epochs == [2, 2]
    assert report.learning_curves(make_record("naive", 1)) is None  # records from before curves were kept
    write(tmp_path / "runs", "a.json", record)
    names = {p.name for p in report.write_plots(tmp_path)}
    assert "mnist_class-il_naive_learning.png" in names


def test_joint_is_a_horizontal_reference_line_in_the_curves(tmp_path: Path, monkeypatch) -> None:
    from matplotlib.axes import Axes

    joint = make_record("joint", 0, 0.9)
    joint["acc_matrix"] = [[0.85, 0.95]]
    write(tmp_path / "runs", "j.json", joint)
    write(tmp_path / "runs", "n.json", make_record("naive", 0, 0.5))
    lines, real = [], Axes.axhline
    monkeypatch.setattr(Axes, "axhline", lambda self, y=0, *a, **k: lines.append((y, k.get("label"))) or
                        real(self, y, *a, **k))
    report.write_plots(tmp_path)
    assert lines == [(pytest.approx(90.0), "joint (all tasks at once)")]


def test_memory_free_runs_get_their_own_table(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write(runs, "naive.json", make_record("naive", 0, 0.2, memory=0))
    write(runs, "ewc200.json", make_record("ewc", 0, 0.8, memory=200))
    write(runs, "ewc0.json", make_record("ewc", 0, 0.25, memory=0))
    report.write_tables(tmp_path)
    with_memory = (tmp_path / "tables" / "mnist_class-il.md").read_text()
    memory_free = (tmp_path / "tables" / "mnist_class-il_memory0.md").read_text()
    assert "80.00" in with_memory and "25.00" not in with_memory and "20.00" in with_memory
    assert "25.00" in memory_free and "80.00" not in memory_free and "20.00" in memory_free
    assert "Memory budget: 0 exemplars" in memory_free.splitlines()[0]
    curves = sorted(p.name for p in report.write_plots(tmp_path) if p.name.endswith("_curves.png"))
    assert curves == ["mnist_class-il_curves.png", "mnist_class-il_memory0_curves.png"]


def test_the_cost_plot_puts_each_row_at_its_parameters_and_cpu_time(tmp_path: Path, monkeypatch) -> None:
    """One point per row: (parameters, final accuracy) on the left, (CPU seconds, final) on the right,
    both means over the ok seeds, with one std of the final accuracy as the bar."""
    from matplotlib.axes import Axes

    for seed, (acc, params, cpu) in enumerate([(0.5, 1000, 10.0), (0.7, 3000, 30.0)]):
        record = make_record("ewc", seed, acc)
        record.update(params=params, cpu_s=cpu)
        write(tmp_path / "runs", f"ewc{seed}.json", record)
    naive = make_record("naive", 0, 0.2)
    naive.update(params=500, cpu_s=5.0)
    write(tmp_path / "runs", "naive.json", naive)
    points, real = [], Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, yerr=None, **k: points.append((x, y, yerr)) or
                        real(self, x, y, yerr=yerr, **k))
    assert "mnist_class-il_cost.png" in {p.name for p in report.write_plots(tmp_path)}
    by_x = {x: (y, err) for x, y, err in points}  # two panels: parameters, then CPU seconds
    assert set(by_x) == {2000.0, 20.0, 500.0, 5.0}
    for x in (2000.0, 20.0):  # ewc: seeds at 50% and 70%, params 1000 and 3000, 10 and 30 s
        assert by_x[x][0] == pytest.approx(60.0) and by_x[x][1] == pytest.approx(np.std([50, 70], ddof=1))
    assert by_x[500.0] == (pytest.approx(20.0), None) and by_x[5.0] == (pytest.approx(20.0), None)  # one seed


def test_one_budget_gives_one_table(results: Path) -> None:
    report.write_tables(results)
    assert not list((results / "tables").glob("*_memory0.*"))
