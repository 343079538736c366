"""Tests for what frames a table: significance line, caption, reference note, and the README blocks.

Records are generated with known numbers (as in test_report.py); nothing is trained.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from bench import cli, readme, report
from bench.captions import reference_results, seed_ranges
from bench.significance import compare_ib, significance_line
from test_report import make_record, write

REPO = Path(__file__).resolve().parents[1]


def frames(records: list[dict]):
    return report.summary_frame(records), report.seed_frame(records)


def runs(strategy: str, finals: list[float], seeds: list[int] | None = None, **kw) -> list[dict]:
    return [make_record(strategy, s, f, **kw) for s, f in zip(seeds or range(len(finals)), finals)]


def test_paired_interval_within_noise_names_the_best_rival_not_joint() -> None:
    records = (runs("ib", [0.95, 0.93]) + runs("replay", [0.80, 0.90]) + runs("ewc", [0.70, 0.72])
               + runs("joint", [0.99, 0.99]) + runs("naive", [0.2, 0.2]))
    c = compare_ib(*frames(records))
    assert c.rival == "replay" and c.how == "paired" and c.seeds == (0, 1)
    # d = (0.15, 0.03): mean 0.09, sd 0.0849, t(0.975, 1) = 12.706 -> half width 0.7624
    assert c.diff == pytest.approx(0.09)
    assert c.interval == pytest.approx((0.09 - 0.76237, 0.09 + 0.76237), abs=1e-4)
    text = significance_line(*frames(records))
    assert "replay (85.00%; joint, the upper bound, not counted)" in text
    assert "difference +9.00 points, 95% interval [-67.24, +85.24] (paired t over seeds 0, 1): within noise" in text


def test_interval_that_excludes_zero_says_which_way() -> None:
    records = runs("ib", [0.90, 0.91, 0.92]) + runs("ewc", [0.80, 0.80, 0.81])
    text = significance_line(*frames(records))
    assert "difference +10.67 points" in text and "IB higher beyond seed noise" in text
    records = runs("ib", [0.70, 0.71, 0.72]) + runs("ewc", [0.80, 0.80, 0.81])
    assert "IB lower beyond seed noise" in significance_line(*frames(records))


def test_one_seed_has_no_interval_and_unmatched_seeds_are_unpaired() -> None:
    text = significance_line(*frames(runs("ib", [0.9]) + runs("lwf", [0.8])))
    assert text.endswith("difference +10.00 points; one seed: no interval.")
    c = compare_ib(*frames(runs("ib", [0.9, 0.92], seeds=[0, 1]) + runs("lwf", [0.8, 0.85], seeds=[2, 3])))
    assert c.how == "welch" and c.seeds == () and c.interval[0] < c.diff < c.interval[1]
    assert "Welch t, the seeds do not match" in c.text()


def test_no_line_without_ib_or_rival_or_with_a_failed_ib_seed() -> None:
    assert significance_line(*frames(runs("ewc", [0.8, 0.7]) + runs("naive", [0.2, 0.2]))) == ""
    assert significance_line(*frames(runs("ib", [0.8, 0.7]) + runs("joint", [0.9, 0.9]))) == ""
    failed = runs("ib", [0.9]) + [make_record("ib", 1, status="failed")] + runs("ewc", [0.8, 0.7])
    assert significance_line(*frames(failed)) == ""


def test_caption_states_setting_seeds_and_data_provenance(tmp_path: Path) -> None:
    official = runs("ib", [0.9, 0.9, 0.9]) + runs("ewc", [0.8, 0.8, 0.8])
    for r in official:
        r["data_official"] = True
    for i, r in enumerate(official):
        write(tmp_path / "runs", f"{i}.json", r)
    report.write_tables(tmp_path)
    md = (tmp_path / "tables" / "mnist_class-il.md").read_text()
    caption = md.splitlines()[0]
    assert caption.startswith("Split-MNIST, Class-IL, 2 tasks. Memory budget: 200 exemplars. "
                              "Training: 2 epochs per task, backbone mlp, seeds 0-2. "
                              "Data: the official files (checksums match).")
    # below the table: the significance line, then the reference's Table 2 with its protocol sentence
    notes = md.split("\n\n")[2:]
    assert notes[0].startswith("IB against the best other method")
    assert notes[1].startswith("Reference (its Table 2, final classification accuracy") and "ib 95.8%" in notes[1]
    assert "icarl 91.1%" in notes[1] and "The reference states neither its network" in notes[1]
    tex = (tmp_path / "tables" / "mnist_class-il.tex").read_text()
    assert "% Reference (its Table 2" in tex

    unofficial = make_record("naive", 5, 0.3, dataset="cifar10", memory=0)
    unofficial["data_official"] = False
    write(tmp_path / "runs", "c.json", unofficial)
    report.write_tables(tmp_path)
    cifar = (tmp_path / "tables" / "cifar10_class-il.md").read_text()
    assert "seed 5. Data: NOT the official files" in cifar
    assert "Reference (" not in cifar  # its Table 3-1 is at memory 200, this table has none
    assert cifar.rstrip().endswith("The reference reports no figure for this setting.")
    assert "IB against" not in cifar


def test_reference_only_where_the_budget_matches(tmp_path: Path) -> None:
    for i, r in enumerate(runs("ewc", [0.8]) + runs("ewc", [0.2], memory=0, config_hash="e0")
                          + runs("ib", [0.6], memory=0, config_hash="i0")):
        write(tmp_path / "runs", f"{i}.json", r)
    report.write_tables(tmp_path)
    assert "Reference (its Table 2" in (tmp_path / "tables" / "mnist_class-il.md").read_text()
    assert "Reference (" not in (tmp_path / "tables" / "mnist_class-il_memory0.md").read_text()


def test_reference_file_lists_the_reference_tables() -> None:
    ref = reference_results()
    tables = {(d, s): e["table"] for d, by in ref.items() for s, e in by.items()}
    assert tables == {("omniglot", "task-il"): "1-1", ("mnist", "task-il"): "1-2", ("mnist", "class-il"): "2",
                      ("cifar10", "class-il"): "3-1", ("cifar100", "class-il"): "3-2"}
    assert ref["omniglot"]["task-il"]["results"]["ib"] == 80.8
    for by in ref.values():
        for entry in by.values():
            assert set(entry) == {"table", "memory", "metric", "protocol", "results"}
            assert all(0 < v <= 100 for v in entry["results"].values())


def test_seed_ranges() -> None:
    assert seed_ranges([2, 0, 1, 5, 7, 6]) == "0-2, 5-7"
    assert seed_ranges([3]) == "3"


# ---------------------------------------------------------------- README blocks

def tables_and_readme(tmp_path: Path) -> tuple[Path, Path]:
    for i, r in enumerate(runs("ib", [0.9, 0.92]) + runs("ewc", [0.8, 0.85])):
        write(tmp_path / "results" / "runs", f"{i}.json", r)
    report.write_tables(tmp_path / "results")
    text = ("# Results\n\nProse before.\n\n<!-- bench:table mnist_class-il -->\nstale rows\n"
            "<!-- /bench:table -->\n\nProse after.\n")
    path = tmp_path / "README.md"
    path.write_text(text)
    return tmp_path / "results", path


def test_table_readme_rewrites_the_blocks_and_keeps_the_prose(tmp_path: Path) -> None:
    results, path = tables_and_readme(tmp_path)
    tables = results / "tables"
    assert readme.check(path.read_text(), tables) == [
        f"block mnist_class-il differs from {tables / 'mnist_class-il.md'} (python -m bench table --readme README.md)"]
    assert cli.main(["table", "--results", str(results), "--readme", str(path)]) == 0
    text = path.read_text()
    assert readme.check(text, tables) == []
    table = (tables / "mnist_class-il.md").read_text()
    assert text == ("# Results\n\nProse before.\n\n<!-- bench:table mnist_class-il -->\n" + table
                    + "<!-- /bench:table -->\n\nProse after.\n")
    # a README whose rows drift from the table is caught
    assert readme.check(text.replace("82.50", "82.51", 1), tables) != []


def test_a_table_without_a_block_and_a_block_without_a_table_are_named(tmp_path: Path, capsys) -> None:
    results, path = tables_and_readme(tmp_path)
    write(results / "runs", "t.json", make_record("naive", 0, 0.9, scenario="task-il"))
    assert cli.main(["table", "--results", str(results), "--readme", str(path)]) == 0
    assert "table mnist_task-il has no block" in capsys.readouterr().err
    assert readme.check(path.read_text(), results / "tables") == [
        "table mnist_task-il has no README block (<!-- bench:table mnist_task-il -->)"]
    path.write_text(path.read_text() + "<!-- bench:table cifar10_class-il -->\n<!-- /bench:table -->\n")
    before = path.read_text()
    assert cli.main(["table", "--results", str(results), "--readme", str(path)]) == cli.EXIT_USAGE
    assert "cifar10_class-il" in capsys.readouterr().err and path.read_text() == before


def test_ib_network_line_reports_growth_capping_and_cost_per_task() -> None:
    from bench.ib_network import ib_network_line

    def task(widths, capped, seconds, grown=(0, 0)):
        return {"active": widths, "widths": widths, "grown": list(grown), "capped": capped, "params": 1,
                "sparsity": 1.0, "train_s": seconds}

    ib = runs("ib", [0.9, 0.8], per_task=None)
    for record, last in zip(ib, (4000, 6000)):
        record["params"] = last
        record["per_task"] = [task([100, 50], [0, 0], 1.0, (9, 9))] + [task([100, 50], [0, 0], 2.0)] * 3 \
            + [task([200, 100], [1, 2], 3.0, (100, 0))] * 5 + [task([300, 150], [0, 1], 5.0, (100, 50))]
    records = ib + runs("naive", [0.2, 0.2])  # naive's records have 1000 parameters
    summary = report.summary_frame(records)
    text = ib_network_line(records, summary)
    assert text.startswith("IB's network (mean over 2 seeds): 5,000 parameters after the last task "
                           "(5.00 times naive's 1,000); layer widths 300/150 (from 100/50), 16 channels capped")
    # growth after the first task (the first task's figure is not a decision): 5 + 2 of 18 pairs
    assert "a layer grew in 39% of the (task, layer) pairs after the first task" in text
    # 10 tasks: mean (1 + 6 + 15 + 5) / 10, the first two tasks (1, 2) and the last two (3, 5)
    assert "training 2.7 s per task on average (1.5 s over the first 2 tasks, 4.0 s over the last 2)" in text
    assert ib_network_line(runs("naive", [0.2]), report.summary_frame(runs("naive", [0.2]))) == ""
    written = report.write_tables(Path(__import__("tempfile").mkdtemp()), records)
    assert any("IB's network" in p.read_text() for p in written if p.suffix == ".md")


def test_committed_tables_are_what_bench_table_writes_from_the_committed_records(tmp_path: Path) -> None:
    """results/tables/ is `python -m bench table` output, byte for byte (rebuild it after adding records)."""
    from bench.overview import write_overview

    records = report.load_records(REPO / "results")[0]
    written = report.write_tables(tmp_path, records) + write_overview(tmp_path, report.summary_frame(records),
                                                                    report.seed_frame(records))
    assert written
    for path in written:
        committed = REPO / "results" / "tables" / path.name
        assert committed.is_file(), f"{path.name}: written by bench table, not in results/tables/"
        assert committed.read_bytes() == path.read_bytes(), f"results/tables/{path.name} differs from bench table's"
    assert readme.bench_tables(REPO / "results" / "tables") == readme.bench_tables(tmp_path / "tables"), \
        "results/tables/ holds a table whose records are gone (python -m bench table removes it)"


def test_plots_the_pages_show_are_committed() -> None:
    import re

    shown = re.findall(r"\]\(\.\./(results/plots/[^)]+\.png)\)", (REPO / "docs" / "results.md").read_text(encoding="utf-8"))
    shown += re.findall(r"\]\((results/plots/[^)]+\.png)\)", (REPO / "README.md").read_text(encoding="utf-8"))
    assert shown
    assert [p for p in shown if not (REPO / p).is_file()] == []
