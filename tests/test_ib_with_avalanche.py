"""scripts/ib_with_avalanche.py: the IB plugin on Avalanche's own SplitMNIST, Naive and ReplayPlugin."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

from conftest import REPO_ROOT


def test_the_avalanche_example_trains_ib_on_split_mnist(mnist_root):
    done = subprocess.run([sys.executable, "scripts/ib_with_avalanche.py", "--data-root", str(mnist_root),
                           "--epochs", "1", "--batch-size", "16"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    accuracy = re.findall(r"after experience (\d) \(classes \[(\d), (\d)\]\): accuracy (.*); mean", out)
    assert [(int(i), int(a), int(b)) for i, a, b, _ in accuracy] == [(k, 2 * k, 2 * k + 1) for k in range(5)]
    # every experience seen so far, each with a percentage
    assert [len(re.findall(r"exp \d: \d+\.\d%", shown)) for *_, shown in accuracy] == [1, 2, 3, 4, 5]
    widths = ast.literal_eval(re.search(r"IB before training: widths (\[.*\])", out).group(1))
    states = re.findall(r"IB after experience \d: active channels (\[.*?\]) of widths (\[.*?\]) "
                        r"\(now frozen\); layers grown for it by (\[.*?\])", out)
    assert len(states) == 5
    active, seen_widths, grown = (ast.literal_eval(v) for v in states[0])
    assert seen_widths == widths
    # the first experience changed the network: it left channels inactive or, all kept, the
    # layers grew when the second arrived
    assert grown == [0, 0]
    assert active != widths or any(ast.literal_eval(states[1][2]))
    later_widths = [ast.literal_eval(w) for _, w, _ in states]
    assert all(b >= a for x, y in zip(later_widths, later_widths[1:]) for a, b in zip(x, y))
