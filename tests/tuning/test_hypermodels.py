"""The HyperModels with real keras-tuner and tiny real data: searches complete, the best
hyper-parameters rebuild the model, the weighting hyper-parameter reaches the Trainer,
Hyperband hands over epochs and weights."""

import keras
import keras_tuner
import numpy as np
import pytest

import tuning
from mtl_tf import weighting
from tests.helpers import pair_batch, two_task_batch

# The searches train a few cheap methods (the default space, every strategy, is checked
# without training by test_every_weighting_method_is_searched_with_its_own_parameters).
TRIED = ["equal", "uncertainty", "pcgrad", "mgda"]
CASES = {
    "hard_sharing": lambda: (tuning.hypermodel("hard_sharing", tasks={"mnist": 10, "fashion_mnist": 10},
                                               input_shape=(28, 28, 1), weightings=TRIED), two_task_batch(64)),
    "allconv": lambda: (tuning.hypermodel("allconv", tasks={"mnist": 10, "fashion_mnist": 10},
                                          input_shape=(28, 28, 1), weightings=TRIED), two_task_batch(64)),
    "siamese": lambda: (tuning.hypermodel("siamese", weightings=TRIED + ["aux"]), pair_batch(128)),
    "selective_sharing": lambda: (tuning.hypermodel("selective_sharing", tasks=_one_vs_all(["a", "b", "c"]),
                                                    weightings=TRIED),
                                  _digits_batch(96)),
    "evolving_dae": lambda: (tuning.hypermodel("evolving_dae", input_shape=(28, 28, 1)), _semi_supervised(96)),
    "coarse_fine": lambda: (tuning.hypermodel("coarse_fine", tasks={"fine": 10, "coarse": 4},
                                              input_shape=(28, 28, 1)), _coarse_fine_batch(64)),
    "architectures": lambda: (tuning.hypermodel("architectures", tasks={"mnist": 10, "fashion_mnist": 10},
                                                input_shape=(28, 28, 1), weightings=TRIED,
                                                architectures=["mmoe", "ple"]), two_task_batch(64)),
}


def _coarse_fine_batch(n):
    x, y = two_task_batch(n)
    fine = np.maximum(y["mnist"], y["fashion_mnist"])
    return x, {"fine": fine, "coarse": fine // 3}


def _semi_supervised(n):
    x, y = two_task_batch(n)
    labels = np.maximum(y["mnist"], y["fashion_mnist"])
    labels[n // 2:] = -1
    return x, labels


def _one_vs_all(names):
    from zoo.selective_sharing import one_vs_all_tasks

    return one_vs_all_tasks(names)


def _digits_batch(n):
    x, y = two_task_batch(n)
    digits = y["mnist"]
    return x, {t: (digits % 3 == i).astype("int64") for i, t in enumerate("abc")}


def test_every_family_has_a_hypermodel_and_bad_names_are_named():
    assert tuning.list_hypermodels() == ["allconv", "architectures", "coarse_fine", "evolving_dae",
                                         "hard_sharing", "selective_sharing", "siamese"]
    with pytest.raises(ValueError, match=r"name='hard_shraing'.*Did you mean 'hard_sharing'"):
        tuning.hypermodel("hard_shraing", tasks={"a": 2}, input_shape=(4,))
    with pytest.raises(ValueError, match=r"weightings='pcgard'.*Did you mean 'pcgrad'"):
        tuning.hypermodel("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(4,), weightings=["pcgard"])
    with pytest.raises(ValueError, match=r"Cannot tell whether to maximise or minimise 'val_a_f1'"):
        tuning.objective("val_a_f1")


# paper 004's nets at the HyperModel's default widths (14 million parameters) in the slow suite,
# and, keeping the default suite near 10 minutes, the families whose search is that of a
# dense or convolutional net with heads (hard_sharing's, by default) or whose own
# hyper-parameters are checked without training (architectures: see below)
SLOW_SEARCHES = ("coarse_fine", "architectures", "allconv", "siamese")


@pytest.mark.parametrize("family", [pytest.param(f, marks=pytest.mark.slow) if f in SLOW_SEARCHES else f
                                    for f in sorted(CASES)])
def test_a_two_trial_search_completes_and_its_best_rebuilds(family, tmp_path):
    hypermodel, (x, y) = CASES[family]()
    # The README's flow: BayesianOptimization, its second trial proposed by the Gaussian process.
    search = keras_tuner.BayesianOptimization(hypermodel, objective=tuning.objective("val_mean_accuracy"),
                                              max_trials=2, num_initial_points=1, seed=3,
                                              directory=str(tmp_path), project_name=family)
    search.search(x, y, validation_data=(x, y), epochs=1, batch_size=32, verbose=0)
    trials = list(search.oracle.trials.values())
    assert len(trials) == 2 and all(t.status == "COMPLETED" for t in trials)
    assert all(0.0 <= t.score <= 1.0 for t in trials)
    best_hp = search.get_best_hyperparameters(1)[0]
    rebuilt, best = hypermodel.build(best_hp), search.get_best_models(1)[0]
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in best.weights]
    assert sorted(rebuilt.output) == sorted(best.output)


@pytest.mark.parametrize("method, kind, parameters", [
    ("uncertainty", weighting.uncertainty.Uncertainty, {}),
    ("dwa", weighting.dwa.DynamicWeightAverage, {"dwa_temperature": 3.5}),
    ("cagrad", weighting.cagrad.CAGrad, {"cagrad_c": 0.25}),
    ("fixed", weighting.fixed.Fixed, {"fixed_weight_mnist": 2.0, "fixed_weight_fashion_mnist": 0.5}),
])
def test_the_weighting_hyperparameter_is_the_strategy_the_trainer_uses(method, kind, parameters):
    hypermodel = tuning.hypermodel("hard_sharing", tasks={"mnist": 10, "fashion_mnist": 10},
                                   input_shape=(28, 28, 1), weightings=[method, "equal"])
    hp = keras_tuner.HyperParameters()
    hp.values.update({"weighting": method})
    model = hypermodel.build(hp)
    for name, value in parameters.items():
        hp.values[name] = value
    x, y = two_task_batch(32)
    history = hypermodel.fit(hp, model, x, y, epochs=1, batch_size=32, verbose=0)
    used = hypermodel.trainer.weighting
    assert isinstance(used, kind)
    config = used.get_config()
    if method == "dwa":
        assert config["temperature"] == 3.5
    if method == "cagrad":
        assert config["c"] == 0.25
    if method == "fixed":
        assert config["weights"] == [2.0, 0.5]
        np.testing.assert_allclose(history.history["weight_mnist"], [2.0])


def test_every_weighting_method_is_searched_with_its_own_parameters():
    """Each method of the zoo is a value of `weighting`; its parameters are declared under
    it and reach the strategy (checked on values away from the defaults)."""
    from tuning.hypermodels import PARAMETERS, WEIGHTINGS

    assert set(WEIGHTINGS) == set(weighting.available())
    # Five tasks: Krum's and the trimmed mean's ranges depend on T.
    hypermodel = tuning.hypermodel("hard_sharing", tasks={f"task_{i}": 10 for i in range(5)},
                                   input_shape=(8,), weightings=list(WEIGHTINGS))
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    space = {h.name: h for h in hp.space}
    assert sorted(space["weighting"].values) == sorted(WEIGHTINGS)
    for method, parameters in PARAMETERS.items():
        hp.values["weighting"] = method
        for name, argument, _ in parameters:
            declared = space[name]
            assert list(declared.conditions[0].values) == [method], name
            if isinstance(declared, keras_tuner.engine.hyperparameters.Choice):
                hp.values[name] = declared.values[-1]
            elif isinstance(declared, keras_tuner.engine.hyperparameters.Boolean):
                hp.values[name] = not declared.default
            else:
                hp.values[name] = 3 if name == "stch_warmup_epochs" else declared.max_value
        config = hypermodel.weighting(hp, epochs=10).get_config()
        for name, argument, _ in parameters:
            value = config[argument]["class_name"] if name == "cr_mogm_base" else config[argument]
            assert value == hp.values[name], (method, name)
    # STCH's warm-up is cut so that STCH starts before the run ends.
    hp.values.update({"weighting": "stch", "stch_warmup_epochs": 8})
    assert hypermodel.weighting(hp, epochs=5).get_config()["warmup_epochs"] == 3


def test_siamese_searches_paper_003s_auxiliary_weighting():
    hypermodel = tuning.hypermodel("siamese", weightings=["aux"])
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    hp.values["aux_loss_weight"] = 0.2
    x, y = pair_batch(64)
    history = hypermodel.fit(hp, model, x, y, epochs=1, batch_size=32, verbose=0)
    assert history.history["weight_compare"] == [pytest.approx(0.8)]
    assert history.history["weight_digit_a"] == [pytest.approx(0.1)]


class _Recording(tuning.hypermodels.HardSharingHyperModel):
    calls = []

    def fit(self, hp, model, *args, **kwargs):
        start = [w.numpy().copy() for w in model.weights]
        history = super().fit(hp, model, *args, **kwargs)
        self.calls.append((hp.values.get("tuner/trial_id"), kwargs.get("initial_epoch"), kwargs["epochs"],
                           len(history.history["loss"]), start))
        return history


@pytest.mark.slow  # keeping the default suite near 10 minutes
def test_hyperband_hands_over_initial_epoch_and_the_parent_trials_weights(tmp_path):
    x, y = two_task_batch(64)
    hypermodel = _Recording(tasks={"mnist": 10, "fashion_mnist": 10}, input_shape=(28, 28, 1),
                            weightings=["equal", "uncertainty"])
    search = keras_tuner.Hyperband(hypermodel, objective=tuning.objective("val_mean_loss"), max_epochs=3,
                                   factor=3, hyperband_iterations=1, seed=1, directory=str(tmp_path),
                                   project_name="hb")
    search.search(x, y, validation_data=(x, y), batch_size=32, verbose=0)
    resumed = [c for c in hypermodel.calls if c[0] is not None]
    assert resumed, "Hyperband never continued a trial"
    for parent, initial, epochs, trained, start in resumed:
        assert initial > 0 and trained == epochs - initial
        parent_model = search.load_model(search.oracle.get_trial(parent))
        for got, want in zip(start, parent_model.weights):
            np.testing.assert_array_equal(got, want.numpy())
    keras.backend.clear_session()


class _FailsFirst(tuning.hypermodels.HardSharingHyperModel):
    calls = 0

    def fit(self, hp, model, *args, **kwargs):
        type(self).calls += 1
        if type(self).calls == 1:
            raise FloatingPointError("The loss of task 'mnist' is NaN or Inf at epoch 1, step 1")
        return super().fit(hp, model, *args, **kwargs)


def test_a_failing_trial_is_marked_failed_and_the_search_goes_on(tmp_path):
    x, y = two_task_batch(64)
    hypermodel = _FailsFirst(tasks={"mnist": 10, "fashion_mnist": 10}, input_shape=(28, 28, 1),
                             weightings=["equal"])
    search = keras_tuner.RandomSearch(hypermodel, objective=tuning.objective(["val_mean_accuracy", "val_mean_loss"]),
                                      max_trials=3, seed=2, directory=str(tmp_path), project_name="f")
    search.search(x, y, validation_data=(x, y), epochs=1, batch_size=32, verbose=0)
    statuses = sorted(t.status for t in search.oracle.trials.values())
    assert statuses == ["COMPLETED", "COMPLETED", "FAILED"]
    # Two objectives: keras-tuner's multi-objective score, lower is better.
    assert all(t.score is not None for t in search.oracle.trials.values() if t.status == "COMPLETED")


def test_the_sharing_criterion_reaches_the_trainer_and_the_best_model_keeps_its_groups(tmp_path):
    hypermodel = tuning.hypermodel("selective_sharing", tasks=_one_vs_all(["a", "b", "c", "d"]),
                                   weightings=["equal"])
    x, y = two_task_batch(96)
    even, small = (y["mnist"] % 2 == 0).astype("int64"), (y["mnist"] < 5).astype("int64")
    y = {"a": even, "b": even.copy(), "c": small, "d": small.copy()}  # two pairs of copies
    fixed = keras_tuner.HyperParameters()
    fixed.Fixed("criterion", "similarity")
    search = keras_tuner.RandomSearch(hypermodel, objective=tuning.objective("val_mean_accuracy"),
                                      max_trials=1, hyperparameters=fixed, directory=str(tmp_path),
                                      project_name="ss")
    search.search(x, y, validation_data=(x, y), epochs=2, batch_size=32, verbose=0)
    best_hp = search.get_best_hyperparameters(1)[0]
    assert best_hp.values["criterion"] == "similarity"
    assert best_hp.values["groups"] == [["a", "b"], ["c", "d"]]
    best = search.get_best_models(1)[0]
    assert best.count_params() == hypermodel.trainer.model.count_params()


def test_the_dae_hypermodel_trains_with_the_alternating_update_and_the_architecture_decides_the_tasks():
    hypermodel = tuning.hypermodel("evolving_dae", input_shape=(28, 28, 1), weightings=["exp_sigma"])
    hp = keras_tuner.HyperParameters()
    hp.values.update({"architecture": "nn3", "corruption": 0.3})
    model = hypermodel.build(hp)
    x, y = _semi_supervised(64)
    history = hypermodel.fit(hp, model, x, y, epochs=2, batch_size=32, verbose=0)
    trainer = hypermodel.trainer
    assert trainer.update == "alternating" and trainer.weighting.name == "exp_sigma"
    assert [t.name for t in trainer.tasks] == ["classes", "reconstruction_1", "reconstruction_2",
                                               "reconstruction_3"]
    assert model.get_layer("corruption_1").rate == 0.3
    assert len(history.history["reconstruction_3_loss"]) == 2


def test_coarse_fine_searches_the_fine_loss_ratio_and_the_gradient_stop():
    hypermodel = tuning.hypermodel("coarse_fine", tasks={"coarse": 4, "fine": 10}, input_shape=(28, 28, 1))
    assert hypermodel.weightings == ["ratio", "equal", "uncertainty"]
    hp = keras_tuner.HyperParameters()
    hp.values.update({"architecture": "reuse_fine", "stop_gradient": True, "conv_width": 0.25,
                      "head_width": 0.125})
    model = hypermodel.build(hp)
    assert model.get_layer("stop_gradient_fine") is not None
    assert model.get_layer("head_fine").layers[0].units == 128  # 1024 x 0.125
    hp.values["fine_loss_ratio"] = 3.0
    history = hypermodel.fit(hp, model, *_coarse_fine_batch(32), epochs=1, batch_size=32, verbose=0)
    # Weights in task order (coarse, fine): the fine loss counts three times.
    assert history.history["weight_fine"] == [pytest.approx(3.0)]
    assert history.history["weight_coarse"] == [pytest.approx(1.0)]


def test_a_family_without_a_cut_offers_no_strategy_that_needs_one():
    from tuning.hypermodels import HardSharingHyperModel

    class NoCut(HardSharingHyperModel):  # as a family whose every layer mixes the tasks
        has_cut = False

    no_cut = NoCut(tasks={"a": 2, "b": 2}, input_shape=(4,))
    assert {"graddrop", "pcgrad"} <= set(no_cut.weightings)
    assert not {"moco", "db_mtl", "modo"} & set(no_cut.weightings)
    with pytest.raises(ValueError, match=r"weightings='moco'"):
        NoCut(tasks={"a": 2, "b": 2}, input_shape=(4,), weightings=["moco"])
    # Siamese pipes have one: the pipes' logits.
    assert {"moco", "db_mtl", "modo"} <= set(tuning.hypermodel("siamese").weightings)


def test_methods_defined_for_three_tasks_or_more_are_offered_only_then():
    two = tuning.hypermodel("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(4,))
    assert "pcd" in two.weightings and not {"krum", "trimmed_mean"} & set(two.weightings)
    with pytest.raises(ValueError, match=r"weightings='krum'"):
        tuning.hypermodel("hard_sharing", tasks={"a": 2, "b": 2}, input_shape=(4,), weightings=["krum"])
    three = tuning.hypermodel("hard_sharing", tasks={"a": 2, "b": 2, "c": 2}, input_shape=(4,))
    assert {"krum", "trimmed_mean"} <= set(three.weightings)


@pytest.mark.parametrize("architecture, values, arguments", [
    ("mmoe", {"experts": 6, "expert_units": 64, "tower_units": 8}, {"experts": 6}),
    ("ple", {"levels": 3, "shared_experts": 2, "task_experts": 2}, {}),
    ("dselect_k", {"experts": 2, "dselect_k": 2, "dselect_gate": "static"}, {}),
    ("cross_stitch", {"units": 64}, {}),
    ("learning_to_branch", {"units": 64, "logit_scale": 10.0}, {}),
])
def test_each_architectures_own_hyperparameters_reach_its_builder(architecture, values, arguments):
    hypermodel = tuning.hypermodel("architectures", tasks={"a": 2, "b": 3}, input_shape=(8,))
    hp = keras_tuner.HyperParameters()
    hp.values.update({"architecture": architecture, **values})
    model = hypermodel.build(hp)
    assert model.name == architecture
    layers = {layer.name for layer in model.layers}
    if architecture == "mmoe":
        assert {f"expert_{i}" for i in range(6)} <= layers and "expert_6" not in layers
        assert model.get_layer("expert_0").layers[-1].units == 64
    if architecture == "ple":
        assert {"gate_1_shared", "expert_2_shared_1", "expert_2_a_1"} <= layers
    if architecture == "dselect_k":  # k is capped at the experts
        gate = model.get_layer("gate_a")
        assert (gate.k, gate.gate) == (2, "static")
    if architecture == "cross_stitch":
        assert model.get_layer("a_dense_0").units == 64
    if architecture == "learning_to_branch":  # input (8,): one dense layer, a unit per head
        assert model.get_layer("node_0_0").units == 64 and model.get_layer("branch_head_a").logit_scale == 10.0
    # Without a graph cut (Cross-stitch), no strategy that needs one is offered.
    assert "db_mtl" not in hypermodel.weightings
    assert "db_mtl" in tuning.hypermodel("architectures", tasks={"a": 2, "b": 3}, input_shape=(8,),
                                         architectures=["mmoe"]).weightings
