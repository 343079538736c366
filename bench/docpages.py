"""docs/methods.md, generated from the code so that it stays true: one entry per registered strategy.

    python -m bench.docpages            # rewrite docs/methods.md
    python -m bench.docpages --check    # exit 1 when docs/methods.md is not what it would write

Each entry is built from the strategy module (its docstring: the paper, where the code comes from,
the deviations and known handicaps; `SCENARIOS`, `MEMORY`, `SETTINGS`) and from the protocol files
(the values each setting runs with and the search space `bench tune` chose them from). A strategy
added to `strategies/` gets its entry by rerunning the command; a test fails until then.
"""
from __future__ import annotations

import argparse
import ast
import functools
import sys
from pathlib import Path

from bench.config import load_protocol, protocol_path
from bench.protocol_writeback import FLAT_MARK

PAGE = Path(__file__).resolve().parent.parent / "docs" / "methods.md"
DATASETS = ("mnist", "cifar10", "cifar100", "omniglot")
SCENARIOS = ("class-il", "task-il")
MEMORY_KINDS = {"shared": "the matched class-balanced buffer, shared with the other methods that keep none "
                          "of their own (`+ replay` in the tables)",
                "own": "its own memory, held to the same budget",
                "none": "stores no data (memory 0 in the tables)"}


def value_text(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def settings_text(section: dict, space: dict | None = None, flat: set[str] | frozenset = frozenset()) -> str:
    """`key value (tuned from {grid})` for each setting of a protocol section, `tuned` marking written
    values and `flat` the values a flat grid left (searched, but no point scored apart)."""
    space, tuned = space or {}, section.get("tuned", [])
    parts = []
    # a searched setting the section leaves at the strategy's default is listed by its space alone
    missing = {k: "default" for k in space if k not in section}
    for k, v in {**section, **missing}.items():
        if isinstance(v, dict) or k == "tuned":
            continue
        text = value_text(v) if k == "name" else f"{k} {value_text(v)}"
        if k in space:
            grid = ", ".join(map(value_text, space[k]))
            text += (f" (tuned from {{{grid}}})" if k in tuned else
                     f" (flat grid over {{{grid}}}: not a choice)" if k in flat else
                     f" (not tuned yet; space {{{grid}}})")
        parts.append(text)
    return ", ".join(parts)


def protocol_table() -> str:
    """The protocol table of docs/protocol.md (each strategy's settings are in docs/methods.md)."""
    lines = ["| Dataset | Scenario | Backbone | Epochs/task | Batch | Optimizer | Memory | Augment | Tuning budget |",
             "| --- | --- | --- | ---: | ---: | --- | ---: | --- | ---: |"]
    for dataset in DATASETS:
        for scenario in SCENARIOS:
            p = load_protocol(dataset, scenario)
            lines.append(f"| {dataset} | {scenario} | {p['backbone']} | {p['epochs']} | {p['batch_size']} "
                         f"| {settings_text(p['optimizer'])} | {p['memory']} | {'yes' if p.get('augment') else 'no'} "
                         f"| {p.get('tune', {}).get('budget', '–')} |")
    return "\n".join(lines) + "\n"


def _source(info) -> str:
    path = Path(info.module.__file__)
    rel = path.parent.name if path.name == "__init__.py" else path.name
    return f"strategies/{rel}{'/' if path.name == '__init__.py' else ''}"


def _docstring(info) -> str:
    """The module docstring as written (ast, so an edit shows here without importing anything new)."""
    text = ast.get_docstring(ast.parse(Path(info.module.__file__).read_text(encoding="utf-8"))) or ""
    return text.strip()


def _range(setting) -> str:
    if setting.choices:
        return "one of " + ", ".join(map(str, setting.choices))
    low = "" if setting.low is None else f"{'>' if setting.low_open else '≥'} {value_text(setting.low)}"
    high = "" if setting.high is None else f"≤ {value_text(setting.high)}"
    return ", ".join(p for p in (low, high) if p) or "any"


def _flat_keys(dataset: str, scenario: str) -> dict[tuple[str, str], set[str]]:
    """(where, name) -> the keys of `[where.name]` whose value a flat grid wrote: their comment says
    so, and tomllib drops comments."""
    return _flat_keys_in(protocol_path(dataset, scenario).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=32)  # every strategy's entry reads the same few files
def _flat_keys_in(text: str) -> dict[tuple[str, str], set[str]]:
    import tomlkit

    document = tomlkit.parse(text)
    return {(where, name): {k for k in section if section.item(k).trivia.comment.lstrip("# ").startswith(FLAT_MARK)}
            for where in ("strategies", "memory0") for name, section in document.get(where, {}).items()}


def _protocol_lines(name: str, info) -> list[str]:
    runs, skipped, lines = [], [], []
    for dataset in DATASETS:
        for scenario in SCENARIOS:
            protocol = load_protocol(dataset, scenario)
            why = info.why_not(dataset, scenario, protocol["memory"], protocol["backbone"])
            where = f"{dataset} {scenario}"
            if why:
                skipped.append(f"{where} ({why})")
                continue
            runs.append(where)
            spaces, flat = protocol.get("tune", {}), _flat_keys(dataset, scenario)
            own = settings_text(protocol.get("strategies", {}).get(name, {}), spaces.get(name),
                                flat.get(("strategies", name), set()))
            if name in protocol.get("memory0", {}):
                space0 = spaces.get("memory0", {}).get(name, spaces.get(name))
                flat0 = flat.get(("memory0", name), set())
                own += f"; at memory 0: {settings_text(protocol['memory0'][name], space0, flat0)}"
            if own:
                lines.append(f"- {where} (memory {protocol['memory']}): {own}")
    head = [f"Runs in: {', '.join(runs) or 'no protocol'}."]
    if skipped:
        head.append(f"Not run in: {'; '.join(skipped)}.")
    if lines:
        head += ["", "Protocol values (`bench/protocols/`) and the search spaces they were chosen from:", ""] + lines
    return head


def entry(name: str, info) -> str:
    doc = _docstring(info)
    first, _, rest = doc.partition("\n")
    out = [f"## {name}", "", f"{first.strip()}", "",
           f"- Code: `{_source(info)}`. Scenarios: {', '.join(info.scenarios)}. "
           f"Memory: {MEMORY_KINDS.get(info.memory, info.memory)}."
           + (" Trained once on all tasks together." if info.whole_stream else "")]
    if info.settings:
        out += ["", "Settings (`SETTINGS`: default; allowed values):", ""]
        out += [f"- `{k}` ({value_text(s.default)}; {_range(s)}): {s.help}" for k, s in info.settings.items()]
    out += [""] + _protocol_lines(name, info)
    if rest.strip():
        out += ["", "From the code's docstring (paper, deviations, handicaps):", "", rest.strip()]
    return "\n".join(out) + "\n"


def methods_page() -> str:
    from bench import registry

    known = registry.strategies()
    head = ("# Methods\n\n"
            "Generated by `python -m bench.docpages` from each strategy's module (docstring, `SCENARIOS`, "
            "`MEMORY`, `SETTINGS`) and the protocol files; edit those, not this page. "
            "How settings are chosen: [protocol.md](protocol.md#tuning). "
            "How to add a method: [extending.md](extending.md).\n\n"
            "Not implemented: the reference's \"Adaptive Network\" and \"Activation Regularization\" baselines. "
            "It names them in its result tables with at most one line of description and no citation, so neither "
            "architecture nor loss can be reproduced; inventing one would compare the IB network with a method of "
            "this project's making.\n\n"
            "Strategies: " + ", ".join(f"[{n}](#{n})" for n in known) + ".\n")
    return head + "".join("\n" + entry(name, info) for name, info in known.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write docs/methods.md from the strategies and protocols")
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/methods.md differs, write nothing")
    args = parser.parse_args(argv)
    text = methods_page()
    if args.check:
        same = PAGE.is_file() and PAGE.read_text(encoding="utf-8") == text
        print(f"{PAGE}: {'up to date' if same else 'differs (python -m bench.docpages)'}", file=sys.stderr)
        return 0 if same else 1
    from bench.files import atomic_write

    atomic_write(PAGE, text)
    print(PAGE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
