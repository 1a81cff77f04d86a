"""TensorFlow Datasets builders over the local files, so `tfds.load("mtl_mnist")` works
once `mtl_tf` is imported. Prefixed `mtl_` so they never shadow TFDS's own `mnist` etc.,
which download from the internet.

| TFDS name | source |
|---|---|
| mtl_mnist | mnist (train, test, train50k, val10k) |
| mtl_fashion_mnist | fashion_mnist |
| mtl_letters | letters rendered from fonts (NotMNIST-like) |
| mtl_cifar100 | cifar100 (fine and coarse labels), when present |
| mtl_mnist_pairs | mnist_pairs, 1000 pairs per split, seed 0 |
| mtl_multi_mnist, mtl_multi_fashion, mtl_multi_fashion_mnist | the `multi_*` sets, seed 0 |
"""

import numpy as np
import tensorflow_datasets as tfds

from mtl_tf.data.helpers import FASHION_MNIST_CLASSES
from mtl_tf.data.letters import LETTERS
from mtl_tf.data.loaders import load_numpy, splits


class _LocalBuilder(tfds.core.GeneratorBasedBuilder):
    """A builder whose examples come from `load_numpy(SOURCE, split)`."""

    VERSION = tfds.core.Version("1.0.0")
    SOURCE = None
    DESCRIPTION = ""

    def _info(self):
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION, features=self._features(),
            supervised_keys=self._supervised_keys())

    def _supervised_keys(self):
        return ("image", "label")

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in splits(self.SOURCE)}

    def _generate_examples(self, split):
        images, labels = load_numpy(self.SOURCE, split)
        for i, image in enumerate(images):
            yield i, self._example(image, labels, i)

    def _example(self, image, labels, i):
        return {"image": image[..., None] if image.ndim == 2 else image, "label": labels[i]}


def _grey_features(names):
    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(names=list(names)),
    })


class MtlMnist(_LocalBuilder):
    SOURCE = "mnist"
    DESCRIPTION = "MNIST from the classic mnist.pkl.gz, with train50k/val10k splits."

    def _features(self):
        return _grey_features([str(d) for d in range(10)])


class MtlFashionMnist(_LocalBuilder):
    SOURCE = "fashion_mnist"
    DESCRIPTION = "Fashion-MNIST from Debian's dataset-fashion-mnist IDX files."

    def _features(self):
        return _grey_features(FASHION_MNIST_CLASSES)


class MtlLetters(_LocalBuilder):
    SOURCE = "letters"
    DESCRIPTION = "Letters A-J rendered from fonts, NotMNIST-like (not NotMNIST)."

    def _features(self):
        return _grey_features(list(LETTERS))


class MtlCifar100(_LocalBuilder):
    SOURCE = "cifar100"
    DESCRIPTION = "CIFAR-100 from local cifar-100-python files, fine and coarse labels."

    def _features(self):
        return tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "fine": tfds.features.ClassLabel(num_classes=100),
            "coarse": tfds.features.ClassLabel(num_classes=20),
        })

    def _supervised_keys(self):
        return ("image", "fine")

    def _example(self, image, labels, i):
        return {"image": image, "fine": labels["fine"][i], "coarse": labels["coarse"][i]}


class MtlMnistPairs(_LocalBuilder):
    SOURCE = "mnist_pairs"
    DESCRIPTION = "Paper 003's pairs of 14x14 MNIST digits: is the first <= the second?"

    def _features(self):
        return tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(2, 14, 14), dtype=np.float32),
            "compare": tfds.features.ClassLabel(num_classes=2),
            "digit_a": tfds.features.ClassLabel(num_classes=10),
            "digit_b": tfds.features.ClassLabel(num_classes=10),
        })

    def _supervised_keys(self):
        return ("image", "compare")

    def _example(self, image, labels, i):
        return {"image": image, **{task: values[i] for task, values in labels.items()}}


class _MultiBuilder(_LocalBuilder):
    SHAPE = (36, 36, 1)

    def _features(self):
        return tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=self.SHAPE),
            "left": tfds.features.ClassLabel(num_classes=10),
            "right": tfds.features.ClassLabel(num_classes=10),
        })

    def _supervised_keys(self):
        return ("image", "left")

    def _example(self, image, labels, i):
        return {"image": image[..., None], **{task: values[i] for task, values in labels.items()}}


class MtlMultiMnist(_MultiBuilder):
    SOURCE = "multi_mnist"
    SHAPE = (28, 28, 1)
    DESCRIPTION = "Sener and Koltun's MultiMNIST: two digits on one image, tasks left and right."


class MtlMultiFashion(_MultiBuilder):
    SOURCE = "multi_fashion"
    DESCRIPTION = "Pareto MTL's MultiFashion: two shifted Fashion-MNIST items on a 36 x 36 image."


class MtlMultiFashionMnist(_MultiBuilder):
    SOURCE = "multi_fashion_mnist"
    DESCRIPTION = "Pareto MTL's Multi-(Fashion+MNIST): a Fashion-MNIST item top left, a digit bottom right."
