"""tuning: keras-tuner search jobs over the zoo's families.

`hypermodel(name, tasks=..., input_shape=...)` gives a `keras_tuner.HyperModel` whose
search space holds the family's architecture, the optimiser and the loss-weighting
method with its own parameters; `objective(name)` the keras-tuner objective with its
direction (keras-tuner cannot infer it for names like `val_mean_accuracy`).

Example:
```python
import tuning
assert "hard_sharing" in tuning.list_hypermodels()
model = tuning.hypermodel("hard_sharing", tasks={"a": 2, "b": 3}, input_shape=(8,))
assert tuning.objective("val_mean_accuracy").direction == "max"
```
"""

import logging

import keras_tuner

import mtl_tf  # noqa: F401 - first: a quiet TensorFlow start-up
from mtl_tf.names import unknown_name
from tuning.hypermodels import (
    AllConvHyperModel,
    ArchitecturesHyperModel,
    CoarseFineHyperModel,
    EvolvingDAEHyperModel,
    HardSharingHyperModel,
    MultiTaskHyperModel,
    SelectiveSharingHyperModel,
    SiameseHyperModel,
)



class _NoTrialRetracingWarning(logging.Filter):
    """Every trial builds a new model and Trainer, so new compiled steps: TensorFlow then
    warns of "excessive retracing", which in a search is the expected cost of a trial."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_NoTrialRetracingWarning())

HYPERMODELS = {cls.family: cls for cls in (HardSharingHyperModel, AllConvHyperModel, SiameseHyperModel,
                                           SelectiveSharingHyperModel, EvolvingDAEHyperModel,
                                           CoarseFineHyperModel, ArchitecturesHyperModel)}


def list_hypermodels():
    """The families a HyperModel exists for, sorted."""
    return sorted(HYPERMODELS)


def hypermodel(name, **kwargs):
    """The HyperModel of family `name`; keyword arguments go to its constructor."""
    if name not in HYPERMODELS:
        raise unknown_name("family", "name", name, HYPERMODELS)
    return HYPERMODELS[name](**kwargs)


def objective(name, direction=None):
    """A `keras_tuner.Objective` for a logged metric: `"max"` for accuracies, `"min"` for
    losses and errors, unless `direction` says. A list of names gives a list."""
    if isinstance(name, (list, tuple)):
        return [objective(n, direction) for n in name]
    if direction is None:
        if name.endswith("accuracy"):
            direction = "max"
        elif name.endswith(("loss", "mse")):
            direction = "min"
        else:
            raise ValueError(f"Cannot tell whether to maximise or minimise {name!r}; pass "
                             f"direction='max' or 'min'.")
    return keras_tuner.Objective(name, direction)
