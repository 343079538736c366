"""Avalanche's loggers for `bench run --log`: its EvaluationPlugin with the standard metrics.

The record stays the source of the tables; the logs are for watching a cell in
TensorBoard, W&B, CSV or text. Each cell logs into its own folder
`<results>/logs/<record file stem>/`. Nothing here imports Avalanche or a logger
at module level: the command line imports this module to check `--log`.

Before training, `check_ready` makes sure the logs folder can be written and that W&B,
when it is to log online, can reach its server (exit 2 otherwise). During a cell, a
logger that fails (a full disk, a lost connection) stops logging and the cell goes on:
its record is stored with `logs_missing` naming what failed.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

LOGGERS = ("tensorboard", "csv", "wandb", "text")
# the package each logger needs beyond Avalanche's own dependencies
_NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb"}
WANDB_TIMEOUT_S = 5  # to reach the W&B server before training: a machine without network says so fast
_WANDB_OFFLINE = ("offline", "dryrun", "disabled")


class LogError(ValueError):
    """An unknown logger name or a logger whose package is not installed."""


def parse(text: str | None) -> tuple[str, ...]:
    """`tensorboard,csv` -> ("tensorboard", "csv"), checked; raises LogError."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise LogError(f"--log: unknown logger {', '.join(unknown)}; valid: {', '.join(LOGGERS)}")
    missing = [n for n in names if n in _NEEDS and importlib.util.find_spec(_NEEDS[n]) is None]
    if missing:
        raise LogError(f"--log {','.join(missing)} needs the package {', '.join(_NEEDS[n] for n in missing)}: "
                       f"pip install {' '.join(_NEEDS[n] for n in missing)}")
    return names


def check_ready(names: Sequence[str], logs: Path) -> None:
    """Before training: the logs folder `logs` can be written and W&B is offline or its server answers.

    Raises LogError saying what to change, so that a run exits 2 instead of failing its cells.
    """
    if not names:
        return
    try:
        logs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=logs, prefix=".write-check-", suffix=".tmp"):
            pass
    except OSError as exc:
        raise LogError(f"--log: cannot write the logs under {logs}: {exc.strerror or exc}; "
                       "make it a writable folder, or run without --log") from None
    if "wandb" in names and wandb_online():
        url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
        parts = urlsplit(url)
        port = parts.port or (80 if parts.scheme == "http" else 443)
        try:
            socket.create_connection((parts.hostname or "", port), timeout=WANDB_TIMEOUT_S).close()
        except OSError as exc:
            raise LogError(f"--log wandb: W&B is set to log online (WANDB_API_KEY or WANDB_MODE) but its server "
                           f"{url} cannot be reached ({exc}); set WANDB_MODE=offline to log offline "
                           "(and `wandb sync` later), or run without wandb") from None


def wandb_online() -> bool:
    """Whether W&B will log online: the user configured it (a mode other than offline, or an API key)."""
    mode = os.environ.get("WANDB_MODE")
    if mode is not None:
        return mode not in _WANDB_OFFLINE
    return "WANDB_API_KEY" in os.environ


def log_folder(record_path: Path) -> Path:
    """`<results>/runs/<stem>.json` -> `<results>/logs/<stem>/`."""
    return record_path.parent.parent / "logs" / record_path.stem


class _Guarded:
    """A logger whose failure (a full disk, a lost connection) is noted in `failures` and ends its
    logging, instead of failing the cell it watches: the trained result matters more than its logs."""

    def __init__(self, name: str, logger: Any, failures: list[str]):
        self._name, self._logger, self._failures = name, logger, failures
        self._failed = False

    def _call(self, method: Callable, *args, **kwargs) -> Any:
        if self._failed:
            return None
        try:
            return method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever the logger raises, the cell goes on
            self._failed = True
            self._failures.append(f"{self._name}: {type(exc).__name__}: {exc}")
            return None

    def log_metrics(self, metric_values) -> None:
        self._call(self._logger.log_metrics, metric_values)

    def __getattr__(self, attr: str) -> Any:  # the callbacks EvaluationPlugin finds with hasattr
        target = getattr(self._logger, attr)
        return functools.partial(self._call, target) if callable(target) else target


def _make_logger(name: str, folder: Path, files: list) -> Any:
    if name == "tensorboard":
        from avalanche.logging import TensorboardLogger
        return TensorboardLogger(tb_log_dir=folder / "tensorboard")
    if name == "csv":
        from avalanche.logging import CSVLogger
        return CSVLogger(log_folder=str(folder / "csv"))
    if name == "text":
        from avalanche.logging import TextLogger
        files.append(open(folder / "log.txt", "w"))
        return TextLogger(files[-1])
    if name == "wandb":
        # offline unless the user has configured W&B (a mode or an API key)
        if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
            os.environ["WANDB_MODE"] = "offline"
        # Avalanche asks wandb.util.generate_id() for a run id only when none is given
        run_id = os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:8]
        return _scalar_wandb_logger()(project_name="clbench", run_name=folder.name, dir=str(folder),
                                      save_code=False, params={"id": run_id})
    raise LogError(f"unknown logger {name!r}; valid: {', '.join(LOGGERS)}")


def evaluator(names: Sequence[str], folder: Path):
    """An EvaluationPlugin with Avalanche's standard metrics and the named loggers writing under `folder`.

    Returns (plugin, close): `close()` flushes and closes the loggers' files and returns what failed,
    one line per logger ([] when every log is complete). A logger that fails to start or while
    logging stops there; the cell goes on without it.
    """
    from avalanche.evaluation.metrics import (
        accuracy_metrics, bwt_metrics, forgetting_metrics, loss_metrics, ram_usage_metrics, timing_metrics,
    )
    from avalanche.training.plugins import EvaluationPlugin

    loggers, files, failures = [], [], []
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        failures.append(f"{folder}: {exc.strerror or exc}")
        names = ()
    for name in names:
        try:
            loggers.append(_Guarded(name, _make_logger(name, folder, files), failures))
        except LogError:
            raise
        except Exception as exc:  # noqa: BLE001 - a logger that cannot start leaves the cell alone
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    plugin = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        loss_metrics(epoch=True, experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        timing_metrics(epoch=True, experience=True),
        ram_usage_metrics(every=1, epoch=True),
        loggers=loggers,
    )

    def close() -> list[str]:
        for logger in loggers:
            if hasattr(logger, "close"):
                logger.close()
            wandb = getattr(logger, "wandb", None)  # W&B's run stays open until finished
            if wandb is not None and getattr(wandb, "run", None) is not None:
                logger._call(wandb.finish)
        for f in files:
            try:
                f.close()  # flushes the last lines: a full disk shows here
            except OSError as exc:
                failures.append(f"text: {exc.strerror or exc}")
        return failures

    return plugin, close


def _scalar_wandb_logger() -> type:
    """Avalanche 0.6's WandBLogger, fitted to current wandb releases.

    That logger looks up `wandb.viz` and `wandb.util.generate_id`, which wandb 0.2x and later
    no longer have. Every metric the suite logs is a number, so numbers are all this logs.
    """
    from avalanche.logging import WandBLogger

    class ScalarWandBLogger(WandBLogger):
        def log_single_metric(self, name, value, x_plot):
            self.step = x_plot
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.wandb.log({name: value}, step=self.step)

    return ScalarWandBLogger
