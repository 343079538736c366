"""SupportNet (Li et al. 2018): an SVM's support vectors as exemplars, with EWC and feature consolidation.

"SupportNet: solving catastrophic forgetting in class incremental learning with
support data" (arXiv 1806.02942). After each task an SVM with a linear kernel is
fitted on the last hidden layer's features of the stored exemplars and of new
data; each class keeps its support vectors, up to an equal share of the
budget. The next tasks train on new data joined by the exemplars (the matched
memory's batching), with two consolidation terms: an EWC penalty on the
backbone's weights (`lambda_ewc`) and the squared distance between the current
and the stored features of exemplars (`lambda_feat`).

Choices where the paper leaves details open (or where the suite differs):
- The SVM (scikit-learn `SVC`, linear kernel, `svm_c`) is fitted on at most
  `svm_pool` random samples of each new class plus every stored exemplar, not
  on all data: a kernel SVM on 12,000 MNIST samples costs more than training.
- A class with more support vectors than its share keeps those with the largest
  summed |dual coefficient|; a class with fewer keeps all of them and fills its
  share with random other samples of the class (our choice).
- The budget is the suite's: at most `ctx.memory` exemplars in all, shared
  equally by the classes seen, as the matched memory shares it.
- EWC: one diagonal empirical Fisher per task (minibatch approximation) on the
  task's training data, summed over tasks, with the weights after the latest
  task as the single anchor; backbone weights only (the head grows).
- Feature regularisation: on a minibatch drawn from the exemplars each step,
  against their features from the network that chose them (our reading of
  the paper's feature regulariser, which acts on the support data).
- Augmentation is the protocol's (CIFAR: crop and flip): the template augments every training
  batch, new samples and replayed exemplars alike (`bench.strategy.FastLoading`); the SVM, the
  Fisher and the feature regulariser read the images un-augmented (the stored features are
  those of the un-augmented exemplars). The protocol's backbone, optimizer and epochs, not the paper's.
"""
from bench.settings import Setting

SCENARIOS = ("class-il",)
MEMORY = "own"
SETTINGS = {
    "lambda_ewc": Setting(1000.0, low=0.0, help="weight of the EWC penalty on backbone weights"),
    "lambda_feat": Setting(1.0, low=0.0, help="weight of the feature regulariser on exemplars"),
    "svm_c": Setting(1.0, low=0.0, low_open=True, help="the SVM's C (soft-margin penalty)"),
    "svm_pool": Setting(500, low=1, help="new samples per class the SVM is fitted on"),
}


def unsupported(dataset, scenario, memory, backbone):
    if dataset == "omniglot":
        # libsvm fits one-vs-one: 1623 classes make 1.3 million binary SVMs after every task
        return "supportnet's one-vs-one SVM over Omniglot's 1623 classes is impractical"
    return None if memory > 0 else "supportnet needs a memory budget (--memory > 0)"


def invalid(memory, n_classes):
    if memory < n_classes:
        return f"supportnet needs at least one exemplar per class: --memory {memory} < {n_classes} classes"
    return None


def build(ctx):
    from strategies.supportnet.plugin import SupportNetPlugin

    plugin = SupportNetPlugin(ctx.memory, seed=ctx.seed, lambda_ewc=ctx.params["lambda_ewc"],
                              lambda_feat=ctx.params["lambda_feat"], svm_c=ctx.params["svm_c"],
                              svm_pool=ctx.params["svm_pool"], batch_size=ctx.eval_batch_size)
    return ctx.template(plugins=[plugin], replay=False)
