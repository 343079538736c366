"""The `clbench` console script is the same command line as `python -m bench`."""
from __future__ import annotations

import importlib
import tomllib

from conftest import REPO_ROOT

from bench import cli


def test_clbench_console_script_is_the_bench_command_line(capsys):
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["clbench"].partition(":")
    entry = getattr(importlib.import_module(module), name)
    assert entry is cli.main
    assert entry(["list"]) == 0 and "icarl" in capsys.readouterr().out
