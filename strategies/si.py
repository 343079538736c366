"""Synaptic Intelligence (Zenke et al. 2017), Avalanche's SynapticIntelligencePlugin with its snapshots fixed.

Each weight's importance is its contribution to the fall of the loss along the
training path (the sum of -gradient x step over a task), divided by the square
of how far the weight moved in the task; a quadratic penalty, weighted by
`si_lambda`, keeps important weights near their values after the last task.

Fixed here (subclass of Avalanche 0.6's plugin, whose hooks call its static
helpers by class name, so the hooks are replaced):
- Avalanche stores every snapshot (the weights before and after each step, the
  anchor) as `param.detach().cpu().flatten()`: on the CPU that is a view of the
  live weights, not a copy. The step is then always 0, every importance stays 0
  and the anchor moves with the weights, so the penalty is 0 whatever the
  lambda. Here snapshots are copies (`clone`), on the strategy's device.
- Avalanche clips importances at 0.001 from above (not in the paper) and not from
  below, so a weight whose path raised the loss gets a negative importance, a
  penalty that pushes it away from its anchor. Here importances are clipped at 0
  from below only, as the paper's definition (a positive contribution to the
  loss's fall) implies. The upper clip is dropped because under Adam, whose steps
  are about lr in size whatever the gradient, it saturates: after one epoch of
  Split-MNIST's first task (Task-IL, seed 0) 97.5% of the backbone's importances sat
  at 0.001, so the penalty was close to a uniform pull towards the anchor. Without it
  (held out, Split-MNIST Task-IL, seed 0, 4 epochs) si_lambda 1 / 100 / 1e4 scored
  98.8 / 97.8 / 96.8%.
tests/test_new_methods.py checks that the upstream plugin still shows the faults,
so an Avalanche upgrade that fixes them is noticed.
The gradient in the path integral is that of the whole loss (the penalty
included), as in Avalanche; the paper's damping `eps` is Avalanche's 1e-7.
"""
from bench.settings import Setting

SCENARIOS = ("class-il", "task-il")
MEMORY = "shared"
SETTINGS = {"si_lambda": Setting(1.0, low=0.0, help="weight of the quadratic penalty (c in the paper)")}


def plugin_class():
    """The fixed plugin class (built on first use: importing Avalanche is slow)."""
    import torch
    from avalanche.training.plugins import SynapticIntelligencePlugin as Upstream

    def snapshot(model, target, excluded, grad: bool = False) -> None:
        for name, param in Upstream.allowed_parameters(model, excluded):
            source = param.grad if grad else param
            target[name].data = source.detach().flatten().clone()  # a copy, not a view

    class SynapticIntelligence(Upstream):
        def before_training_exp(self, strategy, **kwargs):
            Upstream.create_syn_data(strategy.model, self.ewc_data, self.syn_data, self.excluded_parameters)
            with torch.no_grad():
                snapshot(strategy.model, self.ewc_data[0], self.excluded_parameters)
                for trajectory in self.syn_data["trajectory"].values():
                    trajectory.data.fill_(0.0)

        def before_training_iteration(self, strategy, **kwargs):
            with torch.no_grad():
                snapshot(strategy.model, self.syn_data["old_theta"], self.excluded_parameters)

        def after_training_iteration(self, strategy, **kwargs):
            syn = self.syn_data
            with torch.no_grad():
                snapshot(strategy.model, syn["new_theta"], self.excluded_parameters)
                snapshot(strategy.model, syn["grad"], self.excluded_parameters, grad=True)
                for name, trajectory in syn["trajectory"].items():
                    trajectory.data += syn["grad"][name].data * (syn["new_theta"][name].data
                                                                 - syn["old_theta"][name].data)

        def after_training_exp(self, strategy, **kwargs):
            syn, (anchor, importance) = self.syn_data, self.ewc_data
            with torch.no_grad():
                snapshot(strategy.model, syn["new_theta"], self.excluded_parameters)
                for name, cum in syn["cum_trajectory"].items():
                    moved = (syn["new_theta"][name].data - anchor[name].data) ** 2
                    cum.data += syn["trajectory"][name].data / (moved + self.eps)
                    # the sign turns -g * step (the loss's fall) into a positive importance
                    importance[name].data = torch.clamp(-cum.data, min=0.0)
                    anchor[name].data = syn["new_theta"][name].data.clone()

    return SynapticIntelligence


def build(ctx):
    return ctx.template(plugins=[plugin_class()(si_lambda=ctx.params["si_lambda"])])
