"""Metrics against matrices worked out by hand."""
import pytest

from bench import metrics

# R[i][j]: accuracy on task j after training task i
R = [
    [0.9, None, None],
    [0.6, 0.8, None],
    [0.3, 0.7, 1.0],
]


def test_final_accuracy_is_the_mean_of_the_last_row():
    assert metrics.final_accuracy(R) == pytest.approx((0.3 + 0.7 + 1.0) / 3)


def test_average_incremental_accuracy_averages_each_steps_seen_tasks():
    steps = [0.9, (0.6 + 0.8) / 2, (0.3 + 0.7 + 1.0) / 3]
    assert metrics.average_incremental_accuracy(R) == pytest.approx(sum(steps) / 3)


def test_forgetting_uses_the_best_earlier_accuracy():
    # task 0: best before the end 0.9, now 0.3; task 1: best 0.8, now 0.7
    assert metrics.forgetting(R) == pytest.approx(((0.9 - 0.3) + (0.8 - 0.7)) / 2)


def test_forgetting_takes_the_maximum_not_the_first_accuracy():
    r = [[0.5, None, None], [0.9, 0.8, None], [0.4, 0.8, 0.9]]
    assert metrics.forgetting(r) == pytest.approx(((0.9 - 0.4) + 0.0) / 2)
    assert metrics.backward_transfer(r) == pytest.approx(((0.4 - 0.5) + (0.8 - 0.8)) / 2)


def test_backward_transfer_compares_with_accuracy_just_after_learning():
    assert metrics.backward_transfer(R) == pytest.approx(((0.3 - 0.9) + (0.7 - 0.8)) / 2)


def test_positive_backward_transfer_is_not_forgetting():
    r = [[0.5, None], [0.7, 0.9]]
    assert metrics.backward_transfer(r) == pytest.approx(0.2)
    assert metrics.forgetting(r) == pytest.approx(-0.2)


def test_a_single_row_has_no_forgetting_to_measure():
    summary = metrics.summarize([[0.8, 0.6]])
    assert summary == {"final_acc": pytest.approx(0.7), "avg_inc_acc": None, "forgetting": None, "bwt": None}
