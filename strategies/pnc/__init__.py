"""Progress & Compress (Schwarz et al. 2018): an active column per task, distilled into one online-EWC knowledge base.

"Progress & Compress: A scalable framework for continual learning" (ICML 2018).
Per task: *progress* trains a fresh active column (the backbone's layers, with
lateral links from the frozen knowledge base's layers, as in a progressive
network) and its head; *compress* then trains the knowledge base and its head
for that task to match the active column's outputs (KL divergence) as progress
left them: a frozen teacher, whose laterals read the knowledge base as it was
before compress (targets computed once per task; with the protocol's
augmentation, per batch on the augmented view from a frozen copy of the
knowledge base, so compress sees augmented batches like progress), while an
online EWC penalty, lambda * sum gamma*F* (theta - theta*)^2, keeps it near its
weights after the previous task. F* is a running Fisher: F*_k = gamma F*_{k-1} + F_k.
Predictions (every evaluation) come from the knowledge base and the task's
head. The network size is constant over the stream except for one knowledge
base head per task; the record's `per_task` lists parameters, extra state and
the distillation loss on the first and last batch of each compress phase.

Deviations from the paper:
- Compress runs for as many epochs as progress (the protocol's `epochs`): the
  paper trains each phase for a fixed number of steps that it does not tie
  to the suite's protocols.
- Lateral links are layers of the backbone's kind (linear or 3x3 conv, as in
  `pnn`), without the paper's non-linear adaptors and learned scales.
- The Fisher is the empirical one (true labels) over minibatch gradients, on
  the task's (un-augmented) training data, and covers the knowledge base's shared layers; the
  heads of earlier tasks are not trained in later compress phases, so need none.
- No normalisation by the number of tasks, no reinforcement-learning parts.
- The active column is re-initialised for every task (the paper also allows
  keeping it); its head is new per task.
Avalanche has no Progress & Compress; this is the suite's own.
"""
from bench.settings import Setting

SCENARIOS = ("task-il",)
MEMORY = "none"
SETTINGS = {
    "lambda": Setting(1000.0, low=0.0, help="weight of the online EWC penalty in the compress phase"),
    "gamma": Setting(0.95, low=0.0, high=1.0, help="decay of the running Fisher (1: plain sum)"),
}


def unsupported(dataset, scenario, memory, backbone):
    if backbone == "resnet18":
        return "pnc builds its columns from a layer spec; the resnet18 backbone has none"
    return None


def build(ctx):
    from strategies.pnc.network import CompressPlugin, PnCNet

    model = PnCNet(ctx.spec, len(ctx.split.task_classes[0]))
    optimizer_config = dict(ctx.optimizer)

    def make_optimizer(params):
        return ctx.make_optimizer(params, optimizer_config)

    plugin = CompressPlugin(make_optimizer, ctx.epochs, ctx.params["lambda"], ctx.params["gamma"],
                            batch_size=ctx.batch_size, seed=ctx.seed)
    return ctx.template(model=model, plugins=[plugin], replay=False)
