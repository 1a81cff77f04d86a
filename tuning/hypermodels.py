"""keras-tuner HyperModels for the zoo's families, trained by the core `Trainer`.

Every HyperModel's search space holds the family's architecture knobs (defaults equal to
the builder's), the optimiser (Adam or RMSprop with `learning_rate` 1e-4 to 1e-2, or SGD
with momentum 0.9 and `sgd_learning_rate` 1e-3 to 0.3), and the loss-weighting method as a
hyper-parameter, each method's own parameters conditional on it:

| weighting | its hyper-parameters |
|---|---|
| `equal`, `uncertainty`, `pcgrad`, `gls`, `rlw`, `scale_invariant`, `imtl_l`, `imtl_g`, `imtl`, `upgrad`, `dualproj`, `nash_mtl`, `config` | none |
| `fixed` | `fixed_weight_<task>` per task, 0.1 to 10, log scale |
| `dwa` | `dwa_temperature`, 0.5 to 10, log |
| `gradnorm` | `gradnorm_alpha`, 0 to 3 |
| `mgda` | `mgda_normalize` |
| `cagrad` | `cagrad_c`, 0.1 to 0.9 |
| `stch` | `stch_mu`, 0.01 to 1, log; `stch_warmup_epochs`, 0 to 10 (at most the run's epochs - 2) |
| `famo` | `famo_learning_rate`, 0.001 to 0.1, log; `famo_gamma`, 1e-4 to 0.1, log |
| `aligned_mtl` | `aligned_mtl_scale`: min, median, rmse |
| `fairgrad` | `fairgrad_alpha`, 0.25 to 4, log |
| `gradvac` | `gradvac_beta`, 0.01 to 0.9, log |
| `db_mtl` | `db_mtl_beta`, 0.5 to 0.99 |
| `moco` | `moco_beta`, `moco_gamma`, 0.01 to 1, log |
| `excess_mtl` | `excess_mtl_step`, 0.001 to 1, log |
| `graddrop` | `graddrop_leak`, 0 to 1 |
| `modo` | `modo_gamma`, 0.001 to 1, log |
| `sdmgrad` | `sdmgrad_lamda`, 0 to 1 |
| `krum` (3 tasks or more) | `krum_n_byzantine`, 0 to T - 3; `krum_n_selected`, 1 to T |
| `trimmed_mean` (3 tasks or more) | `trimmed_mean_trim_number`, 1 to (T - 1) / 2 |
| `cr_mogm` | `cr_mogm_base`: mgda, cagrad, pcgrad; `cr_mogm_alpha`, 0.5 to 0.99 |
| `pcd` | `pcd_tau`, 0 to 0.5 (the first task is the primary) |
| `stairs_t1`, `lin_t1` | `schedule_t1`, 1 to the run's epochs |
| `exp_sigma` | `schedule_sigma`, 1 to 100, log |
| `lin` | none (its length is the run's epochs) |
| `aux` (Siamese only) | `aux_loss_weight`, 0 to 1: paper 003's (1 - w) L_compare + w (L_a + L_b) / 2 |
| `ratio` (coarse/fine only) | `fine_loss_ratio`, 0.25 to 8, log: paper 004's fine loss weight (coarse 1) |

Schedules weigh the `main` tasks (indices, default the first) against the others.

`fit` trains through `training.Trainer` (never Keras `fit`): keras-tuner's own callbacks
(its trial checkpoint of the best epoch, its epoch reports) go through the Trainer's
`CallbackList`, Hyperband's `epochs` and `initial_epoch` are honoured, and the History is
returned. Every epoch logs each task's loss and metric, `loss`, and the means over tasks
`mean_loss`, `mean_accuracy` (or `mean_mse`), with `val_` versions given validation data:
any of them is an objective (`tuning.objective("val_mean_accuracy")`).
"""

import keras
import keras_tuner

import zoo
from mtl_tf import weighting as weighting_lib
from mtl_tf.names import unknown_name
from mtl_tf.tasks import as_tasks

# The schedules weigh main tasks against the others; the rest need no main task.
SCHEDULES = ("stairs_t1", "lin", "lin_t1", "exp_sigma")
DEFAULT_WEIGHTINGS = tuple(name for name in weighting_lib.available()
                           if name not in SCHEDULES + ("fixed",))
WEIGHTINGS = DEFAULT_WEIGHTINGS + ("fixed",) + SCHEDULES
# Each method's own hyper-parameters: (name, the strategy's argument, declaration from
# the hyper-parameters, the name and the number of tasks).
PARAMETERS = {
    "dwa": [("dwa_temperature", "temperature",
             lambda hp, n, t: hp.Float(n, 0.5, 10.0, sampling="log", default=2.0))],
    "gradnorm": [("gradnorm_alpha", "alpha", lambda hp, n, t: hp.Float(n, 0.0, 3.0, default=1.5))],
    "mgda": [("mgda_normalize", "normalize", lambda hp, n, t: hp.Boolean(n, default=False))],
    "cagrad": [("cagrad_c", "c", lambda hp, n, t: hp.Float(n, 0.1, 0.9, default=0.5))],
    "stch": [("stch_mu", "mu", lambda hp, n, t: hp.Float(n, 0.01, 1.0, sampling="log", default=1.0)),
             ("stch_warmup_epochs", "warmup_epochs", lambda hp, n, t: hp.Int(n, 0, 10, default=4))],
    "famo": [("famo_learning_rate", "learning_rate",
              lambda hp, n, t: hp.Float(n, 1e-3, 0.1, sampling="log", default=0.025)),
             ("famo_gamma", "gamma", lambda hp, n, t: hp.Float(n, 1e-4, 0.1, sampling="log", default=0.01))],
    "aligned_mtl": [("aligned_mtl_scale", "scale",
                     lambda hp, n, t: hp.Choice(n, ["min", "median", "rmse"], default="min"))],
    "fairgrad": [("fairgrad_alpha", "alpha", lambda hp, n, t: hp.Float(n, 0.25, 4.0, sampling="log", default=1.0))],
    "gradvac": [("gradvac_beta", "beta", lambda hp, n, t: hp.Float(n, 0.01, 0.9, sampling="log", default=0.5))],
    "db_mtl": [("db_mtl_beta", "beta", lambda hp, n, t: hp.Float(n, 0.5, 0.99, default=0.9))],
    "moco": [("moco_beta", "beta", lambda hp, n, t: hp.Float(n, 0.01, 1.0, sampling="log", default=0.1)),
             ("moco_gamma", "gamma", lambda hp, n, t: hp.Float(n, 0.01, 1.0, sampling="log", default=0.1))],
    "excess_mtl": [("excess_mtl_step", "robust_step_size",
                    lambda hp, n, t: hp.Float(n, 1e-3, 1.0, sampling="log", default=0.01))],
    "graddrop": [("graddrop_leak", "leak", lambda hp, n, t: hp.Float(n, 0.0, 1.0, default=0.0))],
    "modo": [("modo_gamma", "gamma", lambda hp, n, t: hp.Float(n, 1e-3, 1.0, sampling="log", default=0.1))],
    "sdmgrad": [("sdmgrad_lamda", "lamda", lambda hp, n, t: hp.Float(n, 0.0, 1.0, default=0.3))],
    "krum": [("krum_n_byzantine", "n_byzantine", lambda hp, n, t: hp.Int(n, 0, t - 3, default=0)),
             ("krum_n_selected", "n_selected", lambda hp, n, t: hp.Int(n, 1, t, default=1))],
    "trimmed_mean": [("trimmed_mean_trim_number", "trim_number",
                      lambda hp, n, t: hp.Int(n, 1, (t - 1) // 2, default=1))],
    "cr_mogm": [("cr_mogm_base", "base", lambda hp, n, t: hp.Choice(n, ["mgda", "cagrad", "pcgrad"], default="mgda")),
                ("cr_mogm_alpha", "alpha", lambda hp, n, t: hp.Float(n, 0.5, 0.99, default=0.9))],
    "pcd": [("pcd_tau", "tau", lambda hp, n, t: hp.Float(n, 0.0, 0.5, default=0.02))],
    "exp_sigma": [("schedule_sigma", "sigma", lambda hp, n, t: hp.Float(n, 1.0, 100.0, sampling="log", default=40.0))],
}
OPTIMIZERS = ("adam", "sgd", "rmsprop")


def _needs_cut(method):
    kind = weighting_lib.strategy_class(method)
    return kind.gradient_state or kind.batch_splits > 1


class MultiTaskHyperModel(keras_tuner.HyperModel):
    """The shared part of every family's HyperModel: optimiser, learning rate, weighting.

    Args:
        tasks: dict of task name -> outputs, or a list of `mtl_tf.tasks.Task`.
        input_shape: tuple of int. One example's shape.
        weightings: names of the weighting methods to search. Defaults to
            `DEFAULT_WEIGHTINGS` (with one task: `("equal",)`).
        main: list of int. The main tasks of the schedules. Defaults to `[0]`.
        batch_size: int. Used when `fit` is not given one. Defaults to `128`.
        seed: int. The Trainer's shuffling seed. Defaults to `0`.
    """

    family = None
    extra_weightings = ()
    # Whether the family's models have a cut between shared and task layers (trunk and
    # heads, or the graph's), which the strategies with per-weight state or a split
    # batch need.
    has_cut = True

    def __init__(self, tasks, input_shape, weightings=None, main=(0,), batch_size=128, seed=0,
                 name=None):
        super().__init__(name=name or self.family)
        self.tasks = as_tasks(tasks)
        self.input_shape = tuple(input_shape)
        known = tuple(m for m in WEIGHTINGS if (self.has_cut or not _needs_cut(m))
                      and len(self.tasks) >= weighting_lib.strategy_class(m).min_tasks) + tuple(self.extra_weightings)
        if weightings is None:
            defaults = tuple(m for m in DEFAULT_WEIGHTINGS if m in known) + tuple(self.extra_weightings)
            weightings = defaults if len(self.tasks) > 1 else ("equal",)
        weightings = list(dict.fromkeys(weightings))
        if not weightings:
            raise ValueError("`weightings` must name at least one weighting method.")
        for name in weightings:
            if name not in known:
                raise unknown_name("weighting method", "weightings", name, known)
        self.weightings = weightings
        self.main = list(main)
        self.batch_size = batch_size
        self.seed = seed

    # === The search space ===================================================================
    def build(self, hp):
        hp.Choice("optimizer", list(OPTIMIZERS), default="adam")
        # Plain SGD needs larger steps than the adaptive methods: its own range.
        with hp.conditional_scope("optimizer", ["adam", "rmsprop"]):
            hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
        with hp.conditional_scope("optimizer", ["sgd"]):
            hp.Float("sgd_learning_rate", 1e-3, 0.3, sampling="log", default=0.03)
        hp.Choice("weighting", self.weightings, default=self.weightings[0])
        self._declare_weighting_parameters(hp)
        return self.build_model(hp)

    def build_model(self, hp):
        """The family's model from its architecture hyper-parameters."""
        raise NotImplementedError

    def _declare_weighting_parameters(self, hp):
        def when(method, declare):
            if method in self.weightings:
                with hp.conditional_scope("weighting", [method]):
                    declare()

        when("fixed", lambda: [hp.Float(f"fixed_weight_{t.name}", 0.1, 10.0, sampling="log", default=1.0)
                               for t in self.tasks])
        for method, parameters in PARAMETERS.items():
            when(method, lambda parameters=parameters: [declare(hp, name, len(self.tasks))
                                                        for name, _, declare in parameters])
        with_t1 = [m for m in ("stairs_t1", "lin_t1") if m in self.weightings]
        if with_t1:  # one parameter under one condition: keras-tuner keeps a name once
            with hp.conditional_scope("weighting", with_t1):
                hp.Int("schedule_t1", 1, 100, default=10)
        when("aux", lambda: hp.Float("aux_loss_weight", 0.0, 1.0, default=0.5))

    def weighting(self, hp, epochs):
        """The weighting strategy the hyper-parameters `hp` name, for a run of `epochs`."""
        values = hp.values
        method = values["weighting"]
        if method == "fixed":
            return weighting_lib.get("fixed", weights=[values[f"fixed_weight_{t.name}"] for t in self.tasks])
        if method == "aux":
            from zoo.siamese import aux_weighting

            return aux_weighting(values["aux_loss_weight"])
        kwargs = {argument: values.get(name) for name, argument, _ in PARAMETERS.get(method, [])}
        if method in SCHEDULES:
            kwargs["main"] = self.main
        if method in ("stairs_t1", "lin_t1"):
            kwargs["t1"] = min(values.get("schedule_t1", 1), epochs)
        if method == "lin":
            kwargs["epochs"] = epochs
        if method == "stch":  # a warm-up the run outlasts, so that STCH itself runs
            kwargs["warmup_epochs"] = max(0, min(kwargs["warmup_epochs"], epochs - 2))
        return weighting_lib.get(method, **kwargs)

    def optimizer(self, hp):
        if hp.values["optimizer"] == "sgd":
            return keras.optimizers.SGD(hp.values["sgd_learning_rate"], momentum=0.9)
        return keras.optimizers.get({"class_name": hp.values["optimizer"],
                                     "config": {"learning_rate": hp.values["learning_rate"]}})

    def trainer_options(self, hp, model):
        """More `Trainer` arguments for a family (its tasks, its update)."""
        return {}

    # === Training =============================================================================
    def fit(self, hp, model, x=None, y=None, epochs=1, batch_size=None, validation_data=None,
            callbacks=None, initial_epoch=None, verbose="auto", **kwargs):
        """Trains `model` with the Trainer as `hp` says and returns the History."""
        if kwargs:
            raise ValueError(f"Unsupported arguments of `fit` for a multi-task HyperModel: "
                             f"{sorted(kwargs)}. It takes x, y, epochs, batch_size, "
                             f"validation_data, callbacks, initial_epoch, verbose.")
        from training import Trainer

        options = {"tasks": list(self.tasks), **self.trainer_options(hp, model)}
        trainer = Trainer(model, weighting=self.weighting(hp, epochs), optimizer=self.optimizer(hp),
                          seed=self.seed, **options)
        self.trainer = trainer  # the last trial's, for inspection
        return trainer.fit(x, y, epochs=epochs, batch_size=batch_size or self.batch_size,
                           validation_data=validation_data, callbacks=callbacks,
                           initial_epoch=initial_epoch or None, verbose=verbose)


class HardSharingHyperModel(MultiTaskHyperModel):
    """`hard_sharing`: trunk kind, filters, the shared layer's width, dropout."""

    family = "hard_sharing"

    def build_model(self, hp):
        kinds = ["conv", "dense"] if len(self.input_shape) >= 2 else ["dense"]
        trunk = hp.Choice("trunk", kinds, default=kinds[0])
        filters = None
        if "conv" in kinds:  # (keras-tuner activates every declared condition once)
            with hp.conditional_scope("trunk", ["conv"]):
                filters = (hp.Choice("filters_1", [16, 32, 64], default=32),
                           hp.Choice("filters_2", [32, 64, 128], default=64))
        units = hp.Choice("units", [64, 128, 256], default=128)
        dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0)
        return zoo.build("hard_sharing", tasks=list(self.tasks), input_shape=self.input_shape,
                         trunk=trunk, filters=filters if trunk == "conv" else None, units=(units,),
                         dropout=dropout)


class AllConvHyperModel(MultiTaskHyperModel):
    """`allconv` with one head per task (paper 000's net): widths, depth, batch norm,
    dropout. (The joint-output form is trained on joint labels, outside this space.)"""

    family = "allconv"

    def build_model(self, hp):
        first = hp.Choice("filters_1", [16, 32, 48], default=32)
        second = hp.Choice("filters_2", [32, 64, 96], default=64)
        return zoo.build("allconv", tasks=list(self.tasks), input_shape=self.input_shape, form="heads",
                         filters=(first, second), depth=hp.Choice("depth", [2, 3], default=2),
                         batch_norm=hp.Boolean("batch_norm", default=True),
                         dropout=hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0))


class SiameseHyperModel(MultiTaskHyperModel):
    """`siamese` (paper 003): the pipe and weight sharing; paper 003's auxiliary-loss
    weighting `aux` joins the searched methods. Its tasks are always `compare`,
    `digit_a` and `digit_b`."""

    family = "siamese"
    extra_weightings = ("aux",)

    def __init__(self, tasks=None, input_shape=(2, 14, 14), **kwargs):
        super().__init__(tasks or {"compare": 2, "digit_a": 10, "digit_b": 10}, input_shape, **kwargs)

    def build_model(self, hp):
        return zoo.build("siamese", tasks={t.name: t.num_outputs for t in self.tasks},
                         input_shape=self.input_shape,
                         pipe=hp.Choice("pipe", ["shallow", "deep", "conv"], default="conv"),
                         weight_sharing=hp.Boolean("weight_sharing", default=True))


class SelectiveSharingHyperModel(MultiTaskHyperModel):
    """`selective_sharing` (paper 002): the shared layer's and the branch point's widths,
    and the sharing criterion; `mtl` (branches never merged) is the baseline among them.
    Tasks default to the ten one-vs-all digit tasks."""

    family = "selective_sharing"
    CRITERIA = ("similarity", "dissimilarity", "variance", "random", "mtl")

    def __init__(self, tasks=None, input_shape=(28, 28, 1), **kwargs):
        from zoo.selective_sharing import one_vs_all_tasks

        super().__init__(tasks or one_vs_all_tasks(), input_shape, **kwargs)

    def build_model(self, hp):
        hp.Choice("criterion", list(self.CRITERIA), default="similarity")
        # A finished trial records the groups it formed (see `fit`), so the tuner's
        # `get_best_models` rebuilds the merged model its checkpoint was written from.
        return zoo.build("selective_sharing", tasks=list(self.tasks), input_shape=self.input_shape,
                         shared_units=hp.Choice("shared_units", [320, 640, 1024], default=640),
                         branch_units=(hp.Choice("branch_units", [50, 100, 200], default=100), 50),
                         groups=hp.values.get("groups"))

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        """Trains with the Selective Sharing callback of the chosen criterion, and
        records the final grouping in the trial's values (`groups`)."""
        from training.selective_sharing import SelectiveSharing
        from zoo.selective_sharing import groups_of

        callbacks = list(callbacks or [])
        if hp.values["criterion"] != "mtl":
            callbacks.insert(0, SelectiveSharing(hp.values["criterion"], seed=self.seed, verbose=False))
        recorder = _GroupsAtBestEpoch(callbacks)
        history = super().fit(hp, model, *args, callbacks=callbacks + [recorder], **kwargs)
        hp.values["groups"] = recorder.groups or groups_of(self.trainer.model)
        return history


class _GroupsAtBestEpoch(keras.callbacks.Callback):
    """The grouping of the epoch keras-tuner's trial checkpoint (its callback with an
    `objective`) last saved, so the best model rebuilds with the groups of its weights."""

    def __init__(self, callbacks):
        super().__init__()
        self.savers = [c for c in callbacks if hasattr(c, "objective") and hasattr(c, "best_value")]
        self.groups = None

    def on_epoch_end(self, epoch, logs=None):
        from zoo.selective_sharing import groups_of

        for saver in self.savers:
            objective = saver.objective
            if not objective.has_value(logs) or saver.best_value == objective.get_value(logs):
                self.groups = groups_of(self.model)


class EvolvingDAEHyperModel(MultiTaskHyperModel):
    """`evolving_dae` (paper 001): the architecture NN1..NN4, the corruption level, and the
    weighting among paper 001's schedules (with their `schedule_t1` / `schedule_sigma`) and
    uncertainty weighting, trained with Algorithm 1's alternating update. Labels are the
    class labels (-1 where unlabelled); the reconstructions need none."""

    family = "evolving_dae"
    SCHEDULES = ("exp_sigma", "lin_t1", "lin", "stairs_t1", "uncertainty")

    def __init__(self, tasks=None, input_shape=(28, 28), weightings=None, **kwargs):
        from zoo.evolving_dae import evolving_dae, tasks as dae_tasks

        super().__init__(tasks or dae_tasks(evolving_dae()), input_shape,
                         weightings=weightings or self.SCHEDULES, **kwargs)

    def build_model(self, hp):
        return zoo.build("evolving_dae", input_shape=self.input_shape,
                         architecture=hp.Choice("architecture", ["nn1", "nn2", "nn3", "nn4"], default="nn1"),
                         corruption=hp.Float("corruption", 0.0, 0.5, step=0.1, default=0.2), seed=self.seed)

    def trainer_options(self, hp, model):
        from zoo import evolving_dae

        return {"tasks": evolving_dae.tasks(model), "update": "alternating",
                "groups": evolving_dae.groups(model)}


class CoarseFineHyperModel(MultiTaskHyperModel):
    """`coarse_fine` (paper 004): the architecture among the six, whether the reused
    scores pass gradients back (reuse architectures only), the convolutions' and heads'
    widths as fractions of the paper's, dropout, the batch norms' momentum (0.9 suits the
    few steps of a short trial); and the fine/coarse loss ratio as the
    weighting `ratio` (`fine_loss_ratio`, 0.25 to 8, log; the paper's is 2), searched
    beside the core methods. Tasks default to CIFAR-100's `fine` (100) and `coarse` (20)."""

    family = "coarse_fine"
    extra_weightings = ("ratio",)

    def __init__(self, tasks=None, input_shape=(32, 32, 3), weightings=None, fine="fine", coarse="coarse",
                 **kwargs):
        super().__init__(tasks or {fine: 100, coarse: 20}, input_shape,
                         weightings=weightings or ("ratio", "equal", "uncertainty"), **kwargs)
        self.fine, self.coarse = fine, coarse

    def build_model(self, hp):
        from zoo.coarse_fine import ARCHITECTURES, CONV_FILTERS, HEAD_UNITS

        architecture = hp.Choice("architecture", list(ARCHITECTURES), default="shared_reuse_fine")
        reuse = [a for a in ARCHITECTURES if "reuse" in a]
        with hp.conditional_scope("architecture", reuse):
            stop = hp.Boolean("stop_gradient", default=False)
        conv = hp.Choice("conv_width", [0.25, 0.5, 1.0], default=1.0)
        head = hp.Choice("head_width", [0.125, 0.25, 0.5, 1.0], default=1.0)
        return zoo.build("coarse_fine", tasks=list(self.tasks), input_shape=self.input_shape,
                         architecture=architecture, fine=self.fine, coarse=self.coarse,
                         conv_filters=tuple(tuple(max(1, round(f * conv)) for f in g) for g in CONV_FILTERS),
                         head_units=tuple(max(1, round(u * head)) for u in HEAD_UNITS),
                         dropout=hp.Float("dropout", 0.0, 0.5, step=0.05, default=0.25),
                         batch_norm_momentum=hp.Choice("batch_norm_momentum", [0.9, 0.99], default=0.99),
                         stop_gradient=stop if architecture in reuse else False)

    def _declare_weighting_parameters(self, hp):
        super()._declare_weighting_parameters(hp)
        if "ratio" in self.weightings:
            with hp.conditional_scope("weighting", ["ratio"]):
                hp.Float("fine_loss_ratio", 0.25, 8.0, sampling="log", default=2.0)

    def weighting(self, hp, epochs):
        if hp.values["weighting"] == "ratio":
            ratio = hp.values["fine_loss_ratio"]
            return weighting_lib.get("fixed", weights=[ratio if t.name == self.fine else 1.0 for t in self.tasks])
        return super().weighting(hp, epochs)


class ArchitecturesHyperModel(MultiTaskHyperModel):
    """The field's general architectures as one search space: `architecture` (hard
    sharing, MMoE, OMoE, CGC, PLE, DSelect-k, Cross-stitch, MTAN, Learning to Branch),
    then each one's own knobs under it: the experts' count and width, the towers' width
    (the mixtures), CGC's and PLE's shared and task experts and PLE's levels, DSelect-k's
    k and gate, Cross-stitch's, MTAN's and Learning to Branch's widths, and the branching
    logits' scale. Conv experts and backbones on images; the conv widths stay the
    builders' defaults. A Learning to Branch trial trains its search network under
    `BranchSearch` (one warm-up epoch) and is scored on its most probable tree in place,
    not retrained.

    Args:
        architectures: the names to search. Defaults to all nine.
        Others as `MultiTaskHyperModel`'s.
    """

    family = "architectures"
    ARCHITECTURES = ("hard_sharing", "mmoe", "omoe", "cgc", "ple", "dselect_k", "cross_stitch", "mtan",
                     "learning_to_branch")
    MIXTURES = ("mmoe", "omoe", "cgc", "ple", "dselect_k")

    def __init__(self, tasks, input_shape, architectures=None, **kwargs):
        architectures = list(dict.fromkeys(architectures or self.ARCHITECTURES))
        for name in architectures:
            if name not in self.ARCHITECTURES:
                raise unknown_name("architecture", "architectures", name, self.ARCHITECTURES)
        self.architectures = architectures
        # Cross-stitch has no graph cut: the strategies that need one are left out with it.
        self.has_cut = "cross_stitch" not in architectures
        super().__init__(tasks, input_shape, **kwargs)

    def build_model(self, hp):
        architecture = hp.Choice("architecture", self.architectures, default=self.architectures[0])
        kwargs = {}

        def under(names, declare):
            names = [n for n in names if n in self.architectures]
            if names:
                with hp.conditional_scope("architecture", names):
                    value = declare()
                return value if architecture in names else None

        mixtures = list(self.MIXTURES)
        experts = under(["mmoe", "omoe", "dselect_k"], lambda: hp.Int("experts", 2, 8, default=4))
        kwargs["expert_units"] = under(mixtures, lambda: (hp.Choice("expert_units", [16, 32, 64], default=32),))
        kwargs["tower_units"] = under(mixtures, lambda: (hp.Choice("tower_units", [8, 16, 32], default=16),))
        kwargs["shared_experts"] = under(["cgc", "ple"], lambda: hp.Int("shared_experts", 1, 3, default=1))
        kwargs["task_experts"] = under(["cgc", "ple"], lambda: hp.Int("task_experts", 1, 2, default=1))
        kwargs["levels"] = under(["ple"], lambda: hp.Int("levels", 2, 3, default=2))
        k = under(["dselect_k"], lambda: hp.Int("dselect_k", 1, 2, default=2))
        kwargs["gate"] = under(["dselect_k"], lambda: hp.Choice("dselect_gate", ["per_example", "static"],
                                                                default="per_example"))
        units = under(["hard_sharing", "cross_stitch", "learning_to_branch"],
                      lambda: hp.Choice("units", [64, 128, 256], default=128))
        kwargs["logit_scale"] = under(["learning_to_branch"], lambda: hp.Choice("logit_scale", [1.0, 5.0, 10.0],
                                                                                default=5.0))
        kwargs["head_units"] = under(["mtan"], lambda: (hp.Choice("mtan_head_units", [32, 64], default=64),))
        if architecture in ("mmoe", "omoe", "dselect_k"):
            kwargs["experts"] = experts
        if architecture == "dselect_k":
            kwargs["k"] = min(k, experts)
        if architecture in ("hard_sharing", "cross_stitch", "learning_to_branch"):
            kwargs["units"] = (units,)
        if architecture == "learning_to_branch":
            kwargs["seed"] = self.seed
        if architecture == "hard_sharing" and len(self.input_shape) == 1:
            kwargs["trunk"] = "dense"
        return zoo.build(architecture, tasks=list(self.tasks), input_shape=self.input_shape, **kwargs)

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        """The Trainer's fit, with Learning to Branch's schedule on its search network."""
        from training.learning_to_branch import BranchSearch

        if hp.values["architecture"] == "learning_to_branch":
            callbacks = [BranchSearch(warmup=1, verbose=False), *(callbacks or [])]
        return super().fit(hp, model, *args, callbacks=callbacks, **kwargs)
