"""The front page and docs/: generated parts equal what generates them, short labels, narrow tables.

The committed pages are checked against the committed records and code; the mechanisms
(multi-page block sync, footnoted settings, the overview tables) on generated records.
"""
from __future__ import annotations

import re
from pathlib import Path

from bench import cli, docpages, readme, registry, report
from bench.overview import headline, reference, sizes, write_overview
from test_report import make_record, write

REPO = Path(__file__).resolve().parents[1]
PAGES = {str(page): (REPO / page).read_text(encoding="utf-8") for page in readme.PAGES}


# ---------------------------------------------------------------- the committed pages

def test_readme_is_a_short_front_page_with_one_link_for_each_question() -> None:
    text = PAGES["README.md"]
    assert len(text.splitlines()) <= 200
    assert set(readme.blocks(text)) == {"headline", "separated", "sizes", "reference"}
    for target in ("docs/results.md", "docs/protocol.md#tuning", "docs/methods.md", "docs/extending.md",
                   "docs/running.md", "docs/ib.md", "docs/distributed.md", "docs/notes/"):
        assert f"]({target})" in text, target
    assert "python -m bench run --scenario class-il" in text and "python -m pytest -q" in text


def test_pages_tables_are_bench_table_output() -> None:
    """README.md, docs/results.md and docs/ib.md hold exactly results/tables/*.md
    (rebuild: python -m bench table --readme), and every table has a block on one of them."""
    assert readme.check_pages(PAGES, REPO / "results" / "tables") == []


def test_every_bench_table_is_on_the_results_page() -> None:
    shown = set(readme.blocks(PAGES["docs/results.md"]))
    assert set(readme.bench_tables(REPO / "results" / "tables")) <= shown


def test_methods_page_is_generated_and_has_every_registered_strategy() -> None:
    """docs/methods.md is `python -m bench.docpages` output: a new strategy fails here until it is rerun."""
    page = (REPO / "docs" / "methods.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (\S+)$", page, re.M)
    assert headings == list(registry.strategies())
    assert page == docpages.methods_page(), "docs/methods.md is stale: python -m bench.docpages"


def test_protocol_page_holds_the_protocol_table() -> None:
    page = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    assert docpages.protocol_table() in page, "docs/protocol.md: paste python scripts/protocol_table.py"


def test_row_labels_of_the_committed_tables_are_at_most_40_characters() -> None:
    for path in sorted((REPO / "results" / "tables").glob("*.md")):
        rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
        for row in rows[1:]:  # the header row names columns
            label = row.split("|")[1].strip()
            assert len(label) <= 40, f"{path.name}: {label!r}"


def test_the_table_run_prints_fits_120_columns() -> None:
    records = [r for r in report.load_records(REPO / "results")[0]
               if (r["config"]["dataset"], r["config"]["scenario"]) == ("mnist", "class-il")]
    text = report.terminal_table(report.summary_frame(records))
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) > 10
    assert max(map(len, table)) <= 120


def test_links_between_pages_point_at_files_that_exist() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if target.startswith("http") or target == "extending.md" or target.endswith("/extending.md"):
                continue  # docs/extending.md is written by the methods work (h-methods)
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(REPO)} -> {target}")
    assert missing == []


# ---------------------------------------------------------------- the mechanisms

def test_a_table_on_one_page_is_enough_and_a_drifted_block_is_named(tmp_path: Path) -> None:
    runs = tmp_path / "results" / "runs"
    write(runs, "a.json", make_record("ewc", 0, 0.8))
    write(runs, "b.json", make_record("naive", 0, 0.9, scenario="task-il"))
    front, results_page = tmp_path / "README.md", tmp_path / "results.md"
    front.write_text("# Front\n\n<!-- bench:table headline -->\n<!-- /bench:table -->\n")
    results_page.write_text("<!-- bench:table mnist_class-il -->\n<!-- /bench:table -->\n")
    assert cli.main(["table", "--results", str(tmp_path / "results"),
                     "--readme", str(front), str(results_page)]) == 0
    tables = tmp_path / "results" / "tables"
    texts = {"README.md": front.read_text(), "results.md": results_page.read_text()}
    assert (tables / "headline.md").read_text() in texts["README.md"]
    # mnist_task-il has a block on neither page
    assert readme.check_pages(texts, tables) == [
        "table mnist_task-il has no block on README.md, results.md (<!-- bench:table mnist_task-il -->)"]
    texts["README.md"] += "<!-- bench:table mnist_task-il -->\n" + (tables / "mnist_task-il.md").read_text() \
        + "<!-- /bench:table -->\n"
    assert readme.check_pages(texts, tables) == []
    texts["results.md"] = texts["results.md"].replace("80.00", "80.01")
    assert readme.check_pages(texts, tables) == [
        f"results.md: block mnist_class-il differs from {tables / 'mnist_class-il.md'} (python -m bench table --readme)"]


def test_row_labels_name_the_method_and_footnotes_carry_the_settings(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in (0, 1):
        ib = make_record("ib", seed, 0.9, config_hash="ib200")
        ib["config"]["params"] = {"rate": 0.5, "sigma_init": 0.3, "ncm_means": "exemplars"}
        ib["config"]["tuned"] = ["rate"]
        ib["shared_replay"] = True
        free = make_record("ib", seed, 0.6, memory=0, config_hash="ib0")
        free["config"]["params"] = {"rate": 0.1, "sigma_init": 0.3, "ncm_means": "kept"}
        free["config"]["tuned"] = ["rate"]
        write(runs, f"ib{seed}.json", ib)
        write(runs, f"free{seed}.json", free)
        write(runs, f"ewc{seed}.json", make_record("ewc", seed, 0.7))
    records, _ = report.load_records(tmp_path)
    summary = report.summary_frame(records)
    assert list(summary["label"]) == ["ewc + replay", "ib", "ib + replay"]
    report.write_tables(tmp_path, records)
    with_memory = (tmp_path / "tables" / "mnist_class-il.md").read_text()
    assert "| ib + replay¹ " in with_memory
    # the defaults (sigma_init 0.3, ncm_means exemplars) are left out; the tuned value is named
    assert "¹ ib + replay: rate 0.5; tuned: rate" in with_memory
    free_text = (tmp_path / "tables" / "mnist_class-il_memory0.md").read_text()
    assert "| ib¹ " in free_text and "¹ ib: rate 0.1, ncm_means kept; tuned: rate" in free_text
    terminal = report.terminal_table(summary)
    assert "² ib + replay: rate 0.5; tuned: rate" in terminal and "Extra state" not in terminal


def test_headline_has_a_column_per_setting_and_a_row_per_method(tmp_path: Path) -> None:
    records = [make_record("ewc", s, 0.8 + s / 100) for s in (0, 1)]
    records += [make_record("ewc", s, 0.2, memory=0) for s in (0, 1)]
    records += [make_record("naive", s, 0.9, scenario="task-il", memory=0) for s in (0, 1)]
    records += [make_record("ib", s, 0.95, scenario="task-il", memory=0) for s in (0, 1)]
    summary = report.summary_frame(records)
    text = headline(summary)
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "MNIST CIL 200", "MNIST CIL 0",
                                                                  "MNIST TIL"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in text.splitlines() if line.startswith("| ") and "Method" not in line}
    assert rows["ewc"] == ["80.5 ± 0.7", "20.0 ± 0.0", "–"]
    assert rows["ib"] == ["–", "–", "95.0 ± 0.0"]
    # the reference's Split-MNIST Task-IL figure for IB (99.8) beside the suite's
    assert "99.8 / 95.0" in reference(summary)
    assert [p.name for p in write_overview(tmp_path, summary, report.seed_frame(records))] == [
        "headline.md", "separated.md", "sizes.md", "reference.md"]


def test_the_front_page_says_per_setting_what_the_seeds_separate(tmp_path: Path) -> None:
    """separated.md: the methods not separated from the best (paired t, Holm over the setting's pairs)
    and the IB rows' rank groups; naive, far below, is separated from both."""
    from bench.overview import separated

    records = []
    for seed, (ib, replay, naive) in enumerate([(0.90, 0.89, 0.20), (0.92, 0.92, 0.21), (0.91, 0.905, 0.19),
                                                (0.93, 0.925, 0.20)]):
        records += [make_record("ib", seed, ib), make_record("replay", seed, replay),
                    make_record("naive", seed, naive)]
    text = separated(report.summary_frame(records), report.seed_frame(records))
    assert ("- **MNIST CIL** (3 methods, 2 of 3 pairs separated): not separated from the best, ib + replay, "
            "replay; ib + replay in a.") in text


def test_the_front_page_lists_each_setting_s_rows_not_at_the_backbone_s_size() -> None:
    """sizes.md: parameters at the end as a multiple of naive's, per setting; rows at naive's size are left out,
    and a setting without a naive row has no line (nothing to divide by)."""
    records = []
    for seed in (0, 1):
        for strategy, params in (("naive", 1000), ("pnn", 2900 + 200 * seed), ("ewc", 1020)):
            records.append(make_record(strategy, seed, scenario="task-il", memory=0) | {"params": params})
        records.append(make_record("ib", seed) | {"params": 5000})  # Class-IL: no naive row
    text = sizes(report.summary_frame(records))
    assert "- **MNIST TIL**: pnn 3.0×." in text
    assert "ewc" not in text and "MNIST CIL" not in text
