"""Writing a tuned winner back into its protocol file (`python -m bench tune`).

The winner goes where the next `run` at its memory reads it (`[strategies.<name>]` at the
protocol's budget, `[memory0.<name>]` at 0), each value with a comment naming the command, the
held-out score and the date, and the keys in the section's `tuned` list. The file's other text
stays as it was (tomlkit); a section in a form this cannot edit safely (inline table, dotted
keys) is refused, and the tune checks that before its first trial. The read-modify-write holds
the protocol's lock and is atomic (bench/files.py).
"""
from __future__ import annotations

import copy
import tomllib
from datetime import datetime, timezone
from typing import Any


FLAT_MARK = "flat grid"  # how a flat grid's value comment starts (bench/docpages.py reads it back)


class EditError(ValueError):
    """The protocol's section is in a form the write-back does not edit."""


def show_point(point: dict[str, Any]) -> str:
    """A grid point as `key=value, ...`, as the tune's lines print it."""
    return ", ".join(f"{k}={v}" for k, v in point.items())


def destination(protocol_memory: Any, memory: int) -> str | None:
    """The protocol section a winner at `memory` goes into (None: this protocol runs no such row)."""
    if memory == protocol_memory:
        return "strategies"
    return "memory0" if memory == 0 else None


def edit_protocol(text: str, where: str, name: str, values: dict[str, Any], comment: str,
                  tuned: bool = True) -> str:
    """`text` with `values` set in `[where.name]`, each with `comment`, and the keys added to (or, when
    not `tuned`, removed from) its `tuned` list; the file's other text stays as it was.

    Raises EditError when the section is in a form this does not edit (inline table, dotted keys)
    or when the result would not read back as exactly the intended change."""
    import tomlkit
    from tomlkit.items import InlineTable, Table

    # TOML has no null: the word "none" unsets an optional setting (strategies/ib, rate = "none")
    values = {key: "none" if value is None else value for key, value in values.items()}
    label = f"[{where}.{name}]"
    try:
        before = tomllib.loads(text)
        document = tomlkit.parse(text)
        if isinstance(document.get(where), InlineTable):
            raise EditError(f"{where} is written as an inline table; write {label} as a table of its own")
        appended = where not in document or name not in document[where]
        if appended:  # a new section goes at the end: tomlkit cannot add into tables written out of order
            document = tomlkit.document()
            document.add(where, tomlkit.table(is_super_table=True))
            document[where].add(name, tomlkit.table())
        section = document[where][name]
        if isinstance(section, InlineTable) or not isinstance(section, Table) or section.is_super_table():
            raise EditError(f"{label} is written as an inline table ({name} = {{ ... }}) or with dotted keys; "
                            f"write it as a table: a line {label} followed by one KEY = VALUE per line")
        for key, value in values.items():
            _set(section, key, value)
            section.item(key).comment(comment)
        keys = set(section.get("tuned", []))
        keys = keys | set(values) if tuned else keys - set(values)
        if keys or "tuned" in section:
            _set(section, "tuned", sorted(keys))
        new = text.rstrip("\n") + "\n\n" + tomlkit.dumps(document) if appended else tomlkit.dumps(document)
        after = tomllib.loads(new)
    except EditError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to edit is a form this cannot edit
        raise EditError(f"cannot edit {label}: {type(exc).__name__}: {exc}") from None
    expected = copy.deepcopy(before)
    own = expected.setdefault(where, {}).setdefault(name, {})
    own.update(values)
    if keys or "tuned" in own:
        own["tuned"] = sorted(keys)
    if after != expected:
        raise EditError(f"rewriting {label} would change more than its values (a form tomlkit cannot edit "
                        f"safely); write it as a table: a line {label} followed by one KEY = VALUE per line")
    return new


def _set(section, key: str, value: Any) -> None:
    """`section[key] = value`, except that a new key goes after the section's last value rather than
    after the comments that end it: in the protocol files those introduce the next section."""
    from tomlkit.items import Comment

    body = section.value.body
    last = max((i for i, (k, _) in enumerate(body) if k is not None), default=-1)
    if key in section or not any(isinstance(item, Comment) for _, item in body[last + 1:]):
        section[key] = value
        return
    # tomlkit has no public insert; the write-back's read-back check guards this use
    section.value._insert_at(last + 1, key, value)


def check_write_back(args, memory: int, samples: dict[str, dict]) -> None:
    """Exit 2 before any trial when the winners could not be written: the protocol file cannot be
    replaced, or a section is in a form `edit_protocol` refuses (tried on the text, not the file)."""
    from bench import config as cfg
    from bench.files import check_rewritable
    from bench.plan import UsageError

    path = cfg.protocol_path(args.dataset, args.scenario)
    try:
        check_rewritable(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the winners into {path}: {exc}; make it writable or tune with "
                         f"--no-write") from None
    where = destination(tomllib.loads(text).get("memory"), memory)
    if where is None:
        return  # reported as not written at the end, as before
    for name, point in samples.items():
        try:
            edit_protocol(text, where, name, point, "check")
        except EditError as exc:
            raise UsageError(f"{path}: {exc} (or tune with --no-write)") from None


def write_choice(args, memory: int, name: str, best: dict, score: float, command: str,
                  overridden: list[str] = (), flat: tuple[float, int] | None = None) -> None:
    """Write the chosen values where the next `run` at this memory reads them, keeping the file's comments.

    The read-modify-write holds the protocol's lock, so two tunes at once keep both winners."""
    from bench import config as cfg
    from bench.files import atomic_write, locked
    from bench.runner import print_line

    path = cfg.protocol_path(args.dataset, args.scenario)
    date = datetime.now(timezone.utc).date().isoformat()
    under = f" under {', '.join(overridden)} (not the protocol's settings)" if overridden else ""
    if flat is None:
        comment = f"tuned {date}{under}: held-out final accuracy {100 * score:.2f}% by `{command}`"
    else:
        spread, count = flat
        comment = (f"{FLAT_MARK} {date}{under}: all {count} trials within {spread:.2f} points (best "
                   f"{100 * score:.2f}% held out) by `{command}`: the setting may have no effect; not a choice")
    with locked(path):
        text = path.read_text(encoding="utf-8")
        try:
            runs = tomllib.loads(text).get("memory")
        except tomllib.TOMLDecodeError as exc:  # edited by hand since the tune started
            print_line(f"not written: {path} is not valid TOML now: {exc}")
            return
        where = destination(runs, memory)
        if where is None:
            print_line(f"not written: tuned at memory {memory}, the protocol runs {runs}")
            return
        try:
            new = edit_protocol(text, where, name, best, comment, tuned=flat is None)
        except EditError as exc:
            print_line(f"not written: {path}: {exc}")
            return
        atomic_write(path, new)
    print_line(f"written to {path} [{where}.{name}]: {show_point(best)}"
               + (" (flat grid: not marked tuned)" if flat else ""))
