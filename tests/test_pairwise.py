"""Every pair of methods in a table: paired t tests, Holm-corrected, and rank groups."""
import numpy as np
import pandas as pd
from scipy import stats

from bench.pairwise import pairs, pairwise_block, rank_groups


def frames(accuracies: dict[str, list[float]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary rows and per-seed rows of one table, one method per entry (accuracy per seed)."""
    rows, seeds = [], []
    for name, values in accuracies.items():
        key = {"dataset": "mnist", "scenario": "class-il", "strategy": name, "hash": f"h{name}"}
        rows.append({**key, "label": name, "n_failed": 0, "final_acc_mean": float(np.mean(values))})
        seeds += [{**key, "seed": s, "final_acc": v} for s, v in enumerate(values)]
    return pd.DataFrame(rows), pd.DataFrame(seeds)


def test_holm_adjusts_each_pairs_paired_t_test_over_the_pairs_of_the_table():
    acc = {"a": [0.90, 0.91, 0.92, 0.90, 0.93], "b": [0.89, 0.91, 0.90, 0.90, 0.91],
           "c": [0.50, 0.55, 0.52, 0.51, 0.53], "joint": [0.99] * 5}
    labels, found = pairs(*frames(acc))
    assert labels == ["a", "b", "c"]  # by mean; joint, the upper bound, is not compared
    raw = {(p.a, p.b): stats.ttest_rel(acc[p.a], acc[p.b]).pvalue for p in found}
    order = sorted(raw, key=raw.get)
    expected, running = {}, 0.0
    for rank, pair in enumerate(order):  # Holm by hand: (m - rank) p, made monotone
        running = max(running, min(1.0, (3 - rank) * raw[pair]))
        expected[pair] = running
    for p in found:
        assert abs(p.p - raw[(p.a, p.b)]) < 1e-12
        assert abs(p.p_holm - expected[(p.a, p.b)]) < 1e-12
    separated = {(p.a, p.b) for p in found if p.separated}
    assert separated == {("a", "c"), ("b", "c")}
    assert rank_groups(labels, found) == [["a", "b"], ["c"]]


def test_an_interval_is_drawn_at_its_pairs_holm_level():
    acc = {"a": [0.90, 0.92, 0.95], "b": [0.88, 0.91, 0.90], "c": [0.80, 0.83, 0.81]}
    _, found = pairs(*frames(acc))
    by_p = sorted(found, key=lambda p: p.p)
    for rank, p in enumerate(by_p):  # the smallest p at 0.05 / 3, the next at 0.05 / 2, the last at 0.05
        d = np.array(acc[p.a]) - np.array(acc[p.b])
        level = 1 - 0.05 / (3 - rank)
        half = stats.t.ppf(0.5 + level / 2, 2) * d.std(ddof=1) / np.sqrt(3)
        assert np.allclose(p.interval, (d.mean() - half, d.mean() + half))


def test_groups_overlap_where_separations_are_not_transitive():
    """a - c is steady (separated); a - b and b - c swing from seed to seed (not separated)."""
    a = np.array([0.90, 0.91, 0.92, 0.93])
    acc = {"a": list(a), "b": list(a - [0.05, -0.03, 0.06, -0.02]), "c": list(a - [0.100, 0.101, 0.099, 0.100])}
    labels, found = pairs(*frames(acc))
    assert {(p.a, p.b) for p in found if p.separated} == {("a", "c")}, found
    assert rank_groups(labels, found) == [["a", "b"], ["b", "c"]]
    assert "a: a, b; b: b, c." in pairwise_block(*frames(acc))


def test_a_pair_with_one_shared_seed_is_not_tested_nor_separated():
    rows, seeds = frames({"a": [0.9, 0.91, 0.92], "b": [0.5, 0.52, 0.51]})
    seeds = seeds[~((seeds["strategy"] == "b") & (seeds["seed"] > 0))]
    _, [pair] = pairs(rows, seeds)
    assert pair.p is None and not pair.separated and pair.seeds == 1
    assert "not tested (1 shared seed)" in pairwise_block(rows, seeds)
