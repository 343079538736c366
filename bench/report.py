"""Tables and plots rebuilt from stored run records, without any training.

The work is split along its seams, data flowing one way:

    bench.summary       records on disk -> one row per seed -> one row per table line
    bench.significance  IB against the best other method, with a 95% interval
    bench.captions      what a table's numbers are, and the reference's figures
    bench.tables        Markdown / CSV / LaTeX under <results>/tables/
    bench.plots         PNG figures under <results>/plots/
    bench.overview      the front page's tables: every method in every setting, and the reference's figures
    bench.readme        README result tables copied from <results>/tables/

This module is the command line over them and keeps the names other code and
the tests import from `bench.report`. It imports neither torch nor avalanche
(reports must be cheap to rebuild), and matplotlib only inside the plotting code.

Usage: `python -m bench.report RESULTS_DIR` writes tables and plots and prints
the tables to the terminal.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from bench.captions import table_caption  # noqa: F401
from bench.files import atomic_write, safe_name  # noqa: F401
from bench.plots import (acc_matrix, active_fractions, average_accuracy_curve, learning_curves,  # noqa: F401
                         save_png, write_plots)
from bench.summary import (COSTS, DDOF, DIRTY_MARK, KEY, OLD_CODE_MARK, STRATEGY_ORDER,  # noqa: F401
                           config_labels, current_code, load_records, natural_key, row_name, seed_frame,
                           strategy_rank, summary_frame)
from bench.tables import (MISSING, csv_frame, format_table, latex_table, markdown_table,  # noqa: F401
                          split_by_budget, terminal_table, write_tables)


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild tables and plots for a results directory and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    records, skipped = load_records(args.results_dir)
    if not records:
        print(f"no usable run records under {args.results_dir / 'runs'}", file=sys.stderr)
        return 1
    from bench.overview import write_overview

    written = write_tables(args.results_dir, records)
    written += write_overview(args.results_dir, summary_frame(records), seed_frame(records))
    for path in written:
        if path.suffix == ".md":
            print(path.read_text(encoding="utf-8"))
    if not args.no_plots:
        written += write_plots(args.results_dir, records)
    print(f"wrote {len(written)} files; skipped {len(skipped)} invalid record(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
