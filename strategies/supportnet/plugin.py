"""SupportNet's memory: support vectors as exemplars, and the two consolidation terms."""
from __future__ import annotations

import numpy as np
import torch

from bench.memory import ClassBalancedReplay
from bench.strategy import TensorBatches, materialize
from strategies._fisher import empirical_fisher, penalty


def support_exemplars(features: torch.Tensor, labels: torch.Tensor, quota: dict[int, int], c: float,
                      generator: torch.Generator) -> dict[int, torch.Tensor]:
    """Per class, indices of up to `quota[class]` samples: support vectors first, by summed |dual coefficient|."""
    from sklearn.svm import SVC

    svm = SVC(kernel="linear", C=c).fit(features.double().numpy(), labels.numpy())
    weight = np.abs(svm.dual_coef_).sum(axis=0)  # one column per support vector
    chosen = {}
    for cls, q in quota.items():
        mine = labels[svm.support_] == cls
        support = torch.as_tensor(svm.support_[mine.numpy()])
        support = support[torch.as_tensor(np.argsort(-weight[mine.numpy()], kind="stable"))][:q]
        if len(support) < q:  # too few support vectors: top up with random other samples of the class
            others = torch.nonzero(labels == cls).flatten()
            others = others[~torch.isin(others, support)]
            others = others[torch.randperm(len(others), generator=generator)][: q - len(support)]
            support = torch.cat([support, others])
        chosen[cls] = support
    return chosen


class SupportNetPlugin(ClassBalancedReplay):
    """The matched memory's batching, with SVM-chosen exemplars and EWC plus feature consolidation."""

    def __init__(self, size: int, seed: int, lambda_ewc: float, lambda_feat: float, svm_c: float,
                 svm_pool: int, batch_size: int):
        super().__init__(size, seed=seed)
        self.lambda_ewc, self.lambda_feat, self.svm_c, self.svm_pool = lambda_ewc, lambda_feat, svm_c, svm_pool
        self.batch_size = batch_size
        self.stored_features: dict[tuple[int, int], torch.Tensor] = {}  # features of exemplars when chosen
        self.fisher: list[torch.Tensor] = []
        self.anchor: list[torch.Tensor] = []
        self.last_terms: dict[str, float] = {}

    def exemplars_held(self) -> int:
        return len(self)

    @torch.no_grad()
    def _features(self, model, x: torch.Tensor, device) -> torch.Tensor:
        was_training = model.training
        model.eval()
        out = torch.cat([model.features(b.to(device)).cpu()
                         for b in x.split(self.batch_size)]) if len(x) else torch.zeros(0)
        model.train(was_training)
        return out

    def before_backward(self, strategy, **kwargs):
        extra = strategy.loss.new_zeros(())
        if self.fisher and self.lambda_ewc > 0:
            params = list(strategy.model.features.parameters())
            extra = extra + self.lambda_ewc * penalty(params, self.anchor, self.fisher)
        if self.by_class and self.lambda_feat > 0:
            x, _, _ = self.tensors()
            old = torch.cat(list(self.stored_features.values()))
            idx = torch.randint(len(x), (len(strategy.mb_y),), generator=self.generator)
            now = strategy.model.features(x[idx].to(strategy.device))
            extra = extra + self.lambda_feat * ((now - old[idx].to(strategy.device)) ** 2).sum(1).mean()
        strategy.loss = strategy.loss + extra
        self.last_terms = {"consolidation": extra.item()}

    def after_training_exp(self, strategy, **kwargs):
        model, device = strategy.model, strategy.device
        x, y, t = materialize(strategy.experience.dataset.eval())
        self._consolidate(model, [x, y, t], device)
        self._choose(model, x, y, t, device)

    def _consolidate(self, model, data: list[torch.Tensor], device) -> None:
        params = list(model.features.parameters())
        batches = TensorBatches(data, self.batch_size, shuffle=False)
        fisher = empirical_fisher(lambda x, t: model(x), params, batches, device)
        self.fisher = fisher if not self.fisher else [a + b for a, b in zip(self.fisher, fisher)]
        self.anchor = [p.detach().clone() for p in params]

    def _choose(self, model, x, y, t, device) -> None:
        # candidates: every stored exemplar and a random pool of each new class
        parts = [v for v in self.by_class.values()]
        for key in sorted(set(zip(t.tolist(), y.tolist()))):
            idx = torch.nonzero((t == key[0]) & (y == key[1])).flatten()
            idx = idx[torch.randperm(len(idx), generator=self.generator)][: self.svm_pool]
            parts.append([x[idx], y[idx], t[idx]])
        cx, cy, ct = (torch.cat([p[i] for p in parts]) for i in range(3))
        features = self._features(model, cx, device)
        keys = sorted(set(zip(ct.tolist(), cy.tolist())))
        share, extra = divmod(self.size, len(keys))
        quota = {k[1]: share + (1 if rank < extra else 0) for rank, k in enumerate(keys)}
        chosen = support_exemplars(features, cy, quota, self.svm_c, self.generator)
        self.by_class, self.stored_features = {}, {}
        for key in keys:
            idx = chosen[key[1]]
            if len(idx):
                self.by_class[key] = [cx[idx], cy[idx], ct[idx]]
                self.stored_features[key] = features[idx]
