"""Avalanche's loggers for `bench run --log`: its EvaluationPlugin with the standard metrics.

The record stays the source of the tables; the logs are for watching a cell in
TensorBoard, W&B, CSV or text. Each cell logs into its own folder
`<results>/logs/<record file stem>/`. Nothing here imports Avalanche or a logger
at module level: the command line imports this module to check `--log`.
"""
from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path
from typing import Sequence

LOGGERS = ("tensorboard", "csv", "wandb", "text")
# the package each logger needs beyond Avalanche's own dependencies
_NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb"}


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


def log_folder(record_path: Path) -> Path:
    """`<results>/runs/<stem>.json` -> `<results>/logs/<stem>/`."""
    return record_path.parent.parent / "logs" / record_path.stem


def evaluator(names: Sequence[str], folder: Path):
    """An EvaluationPlugin with Avalanche's standard metrics and the named loggers writing under `folder`.

    Returns (plugin, close): `close()` flushes and closes the loggers' files.
    """
    from avalanche.evaluation.metrics import (
        accuracy_metrics, bwt_metrics, forgetting_metrics, loss_metrics, ram_usage_metrics, timing_metrics,
    )
    from avalanche.training.plugins import EvaluationPlugin

    folder.mkdir(parents=True, exist_ok=True)
    loggers, files = [], []
    for name in names:
        if name == "tensorboard":
            from avalanche.logging import TensorboardLogger
            loggers.append(TensorboardLogger(tb_log_dir=folder / "tensorboard"))
        elif name == "csv":
            from avalanche.logging import CSVLogger
            loggers.append(CSVLogger(log_folder=str(folder / "csv")))
        elif name == "text":
            from avalanche.logging import TextLogger
            files.append(open(folder / "log.txt", "w"))
            loggers.append(TextLogger(files[-1]))
        elif name == "wandb":
            # offline unless the user has configured W&B (a mode or an API key)
            if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
                os.environ["WANDB_MODE"] = "offline"
            # Avalanche asks wandb.util.generate_id() for a run id only when none is given
            run_id = os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:8]
            loggers.append(_scalar_wandb_logger()(project_name="clbench", run_name=folder.name, dir=str(folder),
                                                  save_code=False, params={"id": run_id}))
        else:
            raise LogError(f"unknown logger {name!r}; valid: {', '.join(LOGGERS)}")
    plugin = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        loss_metrics(epoch=True, experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        bwt_metrics(experience=True, stream=True),
        timing_metrics(epoch=True, experience=True),
        ram_usage_metrics(every=1, epoch=True),
        loggers=loggers,
    )

    def close() -> None:
        for logger in loggers:
            if hasattr(logger, "close"):
                logger.close()
            wandb = getattr(logger, "wandb", None)  # W&B's run stays open until finished
            if wandb is not None and getattr(wandb, "run", None) is not None:
                wandb.finish()
        for f in files:
            f.close()

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
