"""Prints the protocol table of docs/protocol.md from bench/protocols/*.toml.

    python scripts/protocol_table.py

Each strategy's settings, with the search space `python -m bench tune` chose them from, are
in docs/methods.md (`python -m bench.docpages`).
"""
from __future__ import annotations

from bench.docpages import protocol_table

if __name__ == "__main__":
    print(protocol_table(), end="")
