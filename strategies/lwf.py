"""Learning without forgetting (Li & Hoiem 2017), Avalanche's LwFPlugin, plus the matched memory.

Task-IL at one backbone pass: Avalanche's plugin runs the student's backbone a second time to get
every old head's output and distils head by head (on Omniglot's 50 tasks, ~4x naive's training
step). Here the student's features come from the training forward itself and every old head of
student and teacher is one matrix product; the loss is the same sum over old tasks of
KL(teacher || student) on each task's seen units, at temperature T (tested against Avalanche's).
"""
import torch

from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"
SETTINGS = {"alpha": Setting(1.0, low=0.0, help="weight of the distillation loss"),
            "temperature": Setting(2.0, low=0.0, low_open=True, help="softmax temperature of the distillation")}


def old_heads_logits(heads, features: torch.Tensor, units: dict) -> torch.Tensor:
    """[batch, tasks, most units]: each old task's head on its seen `units` (padding: -1e9, no mass)."""
    tasks = sorted(units)
    weight = torch.cat([heads[str(t)].classifier.weight for t in tasks])
    bias = torch.cat([heads[str(t)].classifier.bias for t in tasks])
    sizes = [heads[str(t)].classifier.out_features for t in tasks]
    width = max(len(units[t]) for t in tasks)
    index = torch.zeros(len(tasks), width, dtype=torch.long)
    valid = torch.zeros(len(tasks), width, dtype=torch.bool)
    offset = 0
    for row, (t, size) in enumerate(zip(tasks, sizes)):
        seen = sorted(units[t])
        index[row, :len(seen)] = torch.tensor(seen) + offset
        valid[row, :len(seen)] = True
        offset += size
    logits = torch.nn.functional.linear(features, weight, bias)[:, index.to(features.device)]
    return logits.masked_fill(~valid.to(features.device), -1e9)


def build(ctx):
    from avalanche.models import MultiTaskModule
    from avalanche.training.plugins import LwFPlugin

    class OnePassLwF(LwFPlugin):
        """Avalanche's LwF; on a multi-head model the student's old heads read the training forward's features."""

        def before_training_exp(self, strategy, **kwargs):
            self.seen = []
            self.hook = strategy.model.features.register_forward_hook(
                lambda _m, _i, out: self.seen.append(out) if torch.is_grad_enabled() else None)

        def before_training_iteration(self, strategy, **kwargs):
            self.seen.clear()

        def before_backward(self, strategy, **kwargs):
            lwf, x = self.lwf, strategy.mb_x
            one_pass = (isinstance(strategy.model, MultiTaskModule) and len(self.seen) == 1
                        and len(self.seen[0]) == len(x))  # a batch of several tasks takes Avalanche's way
            if lwf.prev_model is None or not one_pass:
                return super().before_backward(strategy, **kwargs)
            units = {t: u for t, u in lwf.prev_classes_by_task.items() if t in lwf.prev_model.known_train_tasks_labels}
            with torch.no_grad():
                teacher = old_heads_logits(lwf.prev_model.classifier.classifiers, lwf.prev_model.features(x), units)
            student = old_heads_logits(strategy.model.classifier.classifiers, self.seen[0], units)
            log_p = torch.log_softmax(student / lwf.temperature, 2)
            q = torch.softmax(teacher / lwf.temperature, 2)
            kl = torch.nn.functional.kl_div(log_p, q, reduction="sum") / len(x)  # = sum of per-task batchmeans
            strategy.loss += lwf.alpha * kl

        def after_training_exp(self, strategy, **kwargs):
            self.hook.remove()  # before the teacher is copied from the model (a copy keeps hooks)
            super().after_training_exp(strategy, **kwargs)

    return ctx.template(plugins=[OnePassLwF(alpha=ctx.params["alpha"], temperature=ctx.params["temperature"])])
