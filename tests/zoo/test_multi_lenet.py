"""MultiLeNet: Sener and Koltun's layers, counted from their code's shapes."""

import numpy as np
import pytest

import zoo

TASKS = {"left": 10, "right": 10}


def _pytorch_count(side, k1):
    # conv 1->10 (k1), conv 10->20 (5), fc flat->50, per task fc 50->50 and 50->10.
    flat = 20 * (((side - k1 + 1) // 2 - 5 + 1) // 2) ** 2
    return (10 * k1 * k1 + 10) + (20 * 10 * 25 + 20) + (flat * 50 + 50) + 2 * (50 * 50 + 50 + 50 * 10 + 10)


@pytest.mark.parametrize("shape, kernels", [((28, 28, 1), (5, 5)), ((36, 36), (9, 5))])
def test_layers_are_the_authors(shape, kernels):
    model = zoo.build("multi_lenet", tasks=TASKS, input_shape=shape, kernels=kernels)
    assert model.count_params() == _pytorch_count(shape[0], kernels[0])
    assert model.get_layer("trunk").output_shape == (None, 50)
    x = np.random.default_rng(0).random((4, *shape), np.float32)
    out = model(x)
    np.testing.assert_array_equal(out["left"], model(x)["left"])  # no dropout at inference
    # In training the trunk's dropout removes whole channels of the second convolution.
    trunk = model.get_layer("trunk")
    dropped = trunk.get_layer(index=[type(l).__name__ for l in trunk.layers].index("SpatialDropout2D"))
    maps = np.asarray(dropped(np.ones((2, 8, 8, 20), np.float32), training=True))
    assert set(np.unique(maps)) == {0.0, 2.0} and all(len(np.unique(maps[i, ..., c])) == 1
                                                      for i in range(2) for c in range(20))


@pytest.mark.parametrize("kwargs, message", [({"kernels": (5,)}, "kernels"), ({"units": 0}, "units"),
                                             ({"input_shape": (8, 8)}, "too small"), ({"dropout": 1.0}, "dropout")])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.build("multi_lenet", tasks=TASKS, **kwargs)
