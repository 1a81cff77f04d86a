"""The base of strategies that need independent samples each step (MoDo, SDMGrad).

The trainer splits each batch into `batch_splits` disjoint parts (example i of the
global batch in part i mod k, so the parts do not depend on the replicas) and passes
`combine_parts` each part's T x P per-task gradients of the shared weights, all-reduced.
LibMTL draws three successive batches per step instead, so that an epoch there reads
three times the data; here a step reads one batch, split, and each part's gradient is
noisier by about sqrt(k). The heads get their own tasks' gradients on the whole batch.
"""

from mtl_tf.weighting.per_task_gradients import PerTaskGradients


class SeveralBatches(PerTaskGradients):
    batch_splits = 3

    def combine(self, grads, losses):
        raise ValueError(f"{type(self).__name__} needs {self.batch_splits} independent parts of the batch: "
                         f"train it through a model with `trunk` and `head_<task>` parts.")

    def combine_parts(self, parts, losses):
        raise NotImplementedError
