"""Every ```python example in a public docstring runs."""

import inspect
import re

import pytest

import mtl_tf
import mtl_tf.data
import mtl_tf.export
import mtl_tf.layers
import mtl_tf.tasks
import zoo
import training
import training.selective_sharing
import zoo.learning_to_branch
import zoo.multi_lenet
import zoo.selective_sharing

OBJECTS = [mtl_tf.data.load_numpy, mtl_tf.data.load, mtl_tf.data.pool, mtl_tf.data.safe_unpickle,
           mtl_tf.tasks.Task, mtl_tf.export.save, zoo.build, zoo.hard_sharing.hard_sharing,
           training.Trainer, zoo.selective_sharing.selective_sharing,
           zoo.selective_sharing.selective_sharing_stl, training.selective_sharing.SelectiveSharing,
           zoo.learning_to_branch.learning_to_branch, mtl_tf.MultiTaskModel, zoo.multi_lenet.multi_lenet,
           mtl_tf.layers.BatchNormalization]


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: o.__qualname__)
def test_docstring_example_runs(obj):
    blocks = re.findall(r"```python\n(.*?)```", inspect.getdoc(obj), re.S)
    assert blocks, f"{obj.__qualname__} has no example"
    for block in blocks:
        exec(compile(block, f"<{obj.__qualname__} example>", "exec"), {})
