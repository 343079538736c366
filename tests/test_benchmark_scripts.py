"""scripts/benchmark_speed.py --ib: IB's cell against the one that trains on the same data."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO_ROOT


def test_ib_ratio_pairs_class_il_ib_with_replay(mnist_root, bench_env):
    done = subprocess.run([sys.executable, "scripts/benchmark_speed.py", "--ib", "--datasets", "mnist",
                           "--epochs", "1", "--data-root", str(mnist_root)], cwd=REPO_ROOT, env=bench_env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = re.search(r"mnist\s+class-il\s+1 epoch\(s\)\s+ib\s+([\d.]+) s\s+replay\s+([\d.]+) s\s+"
                     r"ib/replay ([\d.]+)", done.stdout)
    assert line, done.stdout
    ib, replay, ratio = (float(v) for v in line.groups())
    # the times are printed to 0.01 s, the ratio to 0.01
    assert ib > 0 and replay > 0 and abs(ratio - ib / replay) <= 0.006 + ratio * 0.006 * (1 / ib + 1 / replay)
