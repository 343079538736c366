"""README result tables are `bench table` output, copied between markers.

A block in the README

    <!-- bench:table mnist_class-il -->
    ...the text of results/tables/mnist_class-il.md...
    <!-- /bench:table -->

is rewritten from that file by `python -m bench table --readme README.md`, and
`check_readme` (run by the tests) lists every block that differs from its file
and every table that has no block, so the README cannot drift from the records.
Prose around the blocks is the README's own.

The tables are spread over several pages (`PAGES`: the front page holds the headline
tables, docs/results.md every table): `check_pages` and `update_pages` treat them as
one document, so each table needs a block on one of them.
"""
from __future__ import annotations

import re
from pathlib import Path

BLOCK = re.compile(r"(<!-- bench:table (?P<name>[A-Za-z0-9_.-]+) -->\n)(?P<body>.*?)(<!-- /bench:table -->)",
                   re.S)
# The CSV beside each Markdown table that `bench table` writes starts with this header.
_BENCH_CSV_HEADER = "dataset,scenario,strategy,hash,"


OPEN = re.compile(r"<!-- bench:table (?P<name>[A-Za-z0-9_.-]+) -->")
CLOSE = "<!-- /bench:table -->"
_MARKER = re.compile(r"<!-- (?P<close>/)?bench:table(?: (?P<name>[A-Za-z0-9_.-]+))? -->")


class ReadmeError(ValueError):
    """The README's blocks cannot be rewritten: a block names a table that does not exist, or
    its markers are unbalanced, nested or repeated."""


def check_markers(text: str) -> None:
    """Raise ReadmeError unless every opening marker is followed by its closing one before any
    other marker, and no table has two blocks: a rewrite would otherwise eat the prose between."""
    open_at: tuple[str, int] | None = None
    seen: dict[str, int] = {}
    for match in _MARKER.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if match["close"]:
            if open_at is None:
                raise ReadmeError(f"line {line}: {CLOSE} closes no block (no <!-- bench:table NAME --> before it)")
            open_at = None
            continue
        name = match["name"]
        if name is None:
            raise ReadmeError(f"line {line}: a bench:table marker without a table name")
        if open_at is not None:
            raise ReadmeError(f"line {line}: block {name} opens inside block {open_at[0]} (line {open_at[1]}), "
                              f"which is not closed; add {CLOSE} after block {open_at[0]}'s table")
        if name in seen:
            raise ReadmeError(f"line {line}: a second block for table {name} (the first is at line {seen[name]})")
        seen[name] = line
        open_at = (name, line)
    if open_at is not None:
        raise ReadmeError(f"line {open_at[1]}: block {open_at[0]} is never closed; add {CLOSE} after its table")


def blocks(text: str) -> dict[str, str]:
    """Table name -> the text between its markers (ReadmeError when the markers are malformed)."""
    check_markers(text)
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def bench_tables(tables_dir: Path) -> list[str]:
    """Names of the Markdown tables `bench table` writes (other scripts' tables are not README blocks)."""
    return sorted(p.stem for p in Path(tables_dir).glob("*.md") if _is_bench_table(p.with_suffix(".csv")))


def _is_bench_table(csv: Path) -> bool:
    try:
        with open(csv, encoding="utf-8") as f:
            return f.readline().startswith(_BENCH_CSV_HEADER)
    except OSError:
        return False


def fill(text: str, tables_dir: Path) -> str:
    """`text` with every block replaced by its table file's text (ReadmeError: markers malformed,
    or a block names a table that does not exist)."""
    check_markers(text)
    def body(match: re.Match) -> str:
        path = Path(tables_dir) / f"{match['name']}.md"
        if not path.is_file():
            raise ReadmeError(f"the README has a block for table {match['name']!r}, but {path} does not exist")
        return match.group(1) + path.read_text(encoding="utf-8") + match.group(4)

    return BLOCK.sub(body, text)


def check(text: str, tables_dir: Path) -> list[str]:
    """What keeps the README from being exactly `bench table`'s output; empty when it is."""
    try:
        shown = blocks(text)
    except ReadmeError as exc:
        return [str(exc)]
    problems = []
    for name, body in shown.items():
        path = Path(tables_dir) / f"{name}.md"
        if not path.is_file():
            problems.append(f"block {name}: {path} does not exist")
        elif body != path.read_text(encoding="utf-8"):
            problems.append(f"block {name} differs from {path} (python -m bench table --readme README.md)")
    problems += [f"table {name} has no README block (<!-- bench:table {name} -->)"
                 for name in bench_tables(tables_dir) if name not in shown]
    return problems


def update(readme: Path, tables_dir: Path) -> list[str]:
    """Rewrite `readme`'s blocks in place; return the tables that have no block (to add by hand).

    The file is left untouched when its markers are malformed (ReadmeError); the rewrite keeps
    its mode, line endings and a symlink (bench.files.atomic_write)."""
    from bench.files import atomic_write

    text = readme.read_text(encoding="utf-8")
    new = fill(text, tables_dir)  # raises before anything is written
    if new != text:
        atomic_write(readme, new)
    return [name for name in bench_tables(tables_dir) if name not in blocks(new)]


# The pages `bench table --readme` rewrites when it is given none: the front page and the results page.
PAGES = (Path("README.md"), Path("docs/results.md"), Path("docs/ib.md"))


def check_pages(texts: dict[str, str], tables_dir: Path) -> list[str]:
    """`check` over several pages read as one: every block equals its file, every table has a block somewhere."""
    problems = []
    for page, text in texts.items():
        for name, body in blocks(text).items():
            path = Path(tables_dir) / f"{name}.md"
            if not path.is_file():
                problems.append(f"{page}: block {name}: {path} does not exist")
            elif body != path.read_text(encoding="utf-8"):
                problems.append(f"{page}: block {name} differs from {path} (python -m bench table --readme)")
    shown = {name for text in texts.values() for name in blocks(text)}
    problems += [f"table {name} has no block on {', '.join(texts)} (<!-- bench:table {name} -->)"
                 for name in bench_tables(tables_dir) if name not in shown]
    return problems


def update_pages(pages: list[Path], tables_dir: Path) -> list[str]:
    """`update` each page; return the tables that have a block on none of them."""
    unplaced = [set(update(page, tables_dir)) for page in pages]
    return sorted(set.intersection(*unplaced)) if unplaced else []
