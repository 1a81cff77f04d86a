"""Weight transfer between models: a multi-task net initialises a single-task one.

`transfer(source, target)` copies each top-level layer of `target` from the layer of the
same name in `source` (or the one `mapping` names) when their weights have the same
shapes. A layer listed in `slices` takes the columns `[start, stop)` of the last axis of
each of its source weights instead: a task's share of a joint output layer (paper 000:
the single-task net starts from the multi-task net's shared layers and its own slice of
the output layer). Nested models (a `keras.Sequential` trunk) are copied whole.

Nothing is half-copied: every shape is checked before the first weight is written.
"""

import numpy as np


def _weights(layer):
    return [np.asarray(w) for w in layer.weights]


def transfer(source, target, mapping=None, slices=None, skip=()):
    """Copies weights from `source` into `target`, layer by layer.

    Args:
        source: a built `keras.Model` (the trained multi-task net).
        target: a built `keras.Model` whose weights are overwritten.
        mapping: dict target layer name -> source layer name, for layers whose names
            differ. Defaults to same names.
        slices: dict target layer name -> `(start, stop)`: take those columns of the last
            axis of each of the source layer's weights. Defaults to none.
        skip: target layer names to leave as they are.

    Returns:
        dict with `copied` (target layer names copied whole), `sliced` (taken from a
        slice) and `kept` (target layers with weights left as initialised).

    Example:
    ```python
    import zoo
    from mtl_tf.transfer import transfer
    multi = zoo.build("hard_sharing", tasks={"a": 3, "b": 3}, input_shape=(4,), trunk="dense")
    single = zoo.build("hard_sharing", tasks={"a": 3}, input_shape=(4,), trunk="dense")
    assert transfer(multi, single)["copied"] == ["trunk", "head_a"]
    ```
    """
    mapping, slices, skip = dict(mapping or {}), dict(slices or {}), set(skip)
    layer_names = [layer.name for layer in target.layers]
    for argument, names in (("mapping", mapping), ("slices", slices), ("skip", skip)):
        unknown = sorted(set(names) - set(layer_names))
        if unknown:
            raise ValueError(f"`{argument}` names layers the target does not have: {unknown}. "
                             f"Target layers: {layer_names}")
    source_names = {layer.name for layer in source.layers}
    plan, report = [], {"copied": [], "sliced": [], "kept": []}
    for layer in target.layers:
        if not layer.weights:
            continue
        origin = mapping.get(layer.name, layer.name)
        if layer.name in skip or origin not in source_names:
            if layer.name in mapping:
                raise ValueError(f"`mapping` maps {layer.name!r} to {origin!r}, which the source "
                                 f"does not have. Source layers: {sorted(source_names)}")
            report["kept"].append(layer.name)
            continue
        values = _weights(source.get_layer(origin))
        if layer.name in slices:
            start, stop = slices[layer.name]
            values = [v[..., start:stop] for v in values]
        shapes = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != shapes:
            raise ValueError(f"Layer {layer.name!r} of the target has weight shapes {shapes}, "
                             f"but {origin!r} of the source gives {[v.shape for v in values]}"
                             f"{' after slicing ' + str(slices[layer.name]) if layer.name in slices else ''}.")
        plan.append((layer, values))
        report["sliced" if layer.name in slices else "copied"].append(layer.name)
    for layer, values in plan:
        layer.set_weights(values)
    return report
