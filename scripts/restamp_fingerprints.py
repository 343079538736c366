"""Re-stamp records made before the code fingerprint hashed behaviour instead of bytes (a one-off migration).

A record whose stored `code` equals the former byte fingerprint of the code its
strategy runs now was made by this very code, so it gets the new fingerprint of
that code (bench.provenance) and stays done. Any other record keeps its mark: it
was made by other code, and the new fingerprint cannot tell whose.

    python scripts/restamp_fingerprints.py [RESULTS ...]    # default: results/runs and results/tune/runs
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import registry  # noqa: E402
from bench.provenance import byte_fingerprint, code_files, fingerprint  # noqa: E402
from bench.records import read_json, write_json_atomic  # noqa: E402


def restamp(folders: list[Path]) -> Counter:
    """Re-stamp the records under `folders` (see the module docstring); counts what happened to them."""
    codes = {}  # strategy -> (byte fingerprint, new fingerprint) of its code now
    for name, info in registry.strategies().items():
        files = code_files(info.module.__name__)
        codes[name] = (byte_fingerprint(files), fingerprint(files))
    counts: Counter = Counter()
    for path in sorted(p for folder in folders for p in folder.glob("*.json")):
        record = read_json(path)
        strategy = ((record or {}).get("config") or {}).get("strategy") if isinstance(record, dict) else None
        old, new = codes.get(strategy, (None, None))
        if old is None or record.get("code") is None:
            counts["not a record of a known strategy"] += 1
        elif record["code"] == new:
            counts["already new"] += 1
        elif record["code"] == old:
            write_json_atomic(path, {**record, "code": new, "code_bytes": old})
            counts["re-stamped"] += 1
        else:
            counts["other code, kept"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path,
                        default=[Path("results/runs"), Path("results/tune/runs")])
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        print(f"error: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    for what, n in sorted(restamp(args.folders).items()):
        print(f"{n:5d}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
