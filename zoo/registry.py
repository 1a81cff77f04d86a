"""The model registry: `build(name, **kwargs)`, `list_models(pattern)`, `@register`."""

import fnmatch

from mtl_tf.names import check_arguments, unknown_name

_BUILDERS = {}


def register(name=None):
    """Registers a builder under `name` (default: the function's name). Duplicate names
    are refused, so two families cannot silently shadow each other."""

    def decorator(builder):
        key = name or builder.__name__
        if key in _BUILDERS:
            existing = _BUILDERS[key]
            raise ValueError(f"A model named {key!r} is already registered by "
                             f"{existing.__module__}.{existing.__name__}.")
        _BUILDERS[key] = builder
        return builder

    return decorator


def list_models(pattern="*"):
    """Registered model names matching the shell-style `pattern`, sorted."""
    return sorted(n for n in _BUILDERS if fnmatch.fnmatch(n, pattern))


def get_builder(name):
    if name not in _BUILDERS:
        raise unknown_name("model", "name", name, _BUILDERS)
    return _BUILDERS[name]


def build(name, **kwargs):
    """Builds registered model `name`. Keyword arguments that are `None` are dropped, so
    a command line's unset options never override a model's own defaults.

    Example:
    ```python
    import numpy as np
    import zoo
    model = zoo.build("hard_sharing", tasks={"mnist": 10, "fashion_mnist": 10},
                      input_shape=(28, 28, 1))
    assert sorted(model(np.zeros((1, 28, 28, 1)))) == ["fashion_mnist", "mnist"]
    ```
    """
    builder = get_builder(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    check_arguments("Model", name, builder, kwargs)
    return builder(**kwargs)
