"""Callbacks for the Trainer."""

import keras


class Evaluate(keras.callbacks.Callback):
    """Evaluates the trainer on `data` at the end of every epoch and adds the per-task
    losses and metrics to the epoch's logs under `prefix`, so the callbacks after it
    (the History, the CSV log) record them: paper 003 reports test-accuracy histories.

    Args:
        data: `(x, y)` arrays or a finite `tf.data.Dataset` of batches.
        prefix: str. Put before every key. Defaults to `"test_"`.
        batch_size: int. Batches of in-memory data. Defaults to `1000`.

    Example:
    ```python
    import numpy as np
    import zoo
    from training import Trainer
    from training.callbacks import Evaluate
    model = zoo.build("hard_sharing", tasks={"a": 2}, input_shape=(4,), trunk="dense")
    x = np.ones((8, 4), "float32")
    y = {"a": np.zeros(8, "int64")}
    history = Trainer(model).fit(x, y, epochs=2, callbacks=[Evaluate((x, y))], verbose=0)
    assert len(history.history["test_a_accuracy"]) == 2
    ```
    """

    def __init__(self, data, prefix="test_", batch_size=1000):
        super().__init__()
        self.data = data
        self.prefix = prefix
        self.batch_size = batch_size
        self.trainer = None

    def set_trainer(self, trainer):
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self.trainer is None:
            raise RuntimeError("`Evaluate` runs inside `Trainer.fit`, which hands it the "
                               "trainer and the epoch's logs.")
        results = self.trainer.evaluate(self.data, self.batch_size)
        logs.update({f"{self.prefix}{key}": value for key, value in results.items()})
