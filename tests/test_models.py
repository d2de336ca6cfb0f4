"""What graftune does around Keras' ``fit`` to make small trials cheap, with the same result:
building the training state first (one trace), one input iterator per epoch, validation
batches made once."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP
from orchestrator.models import build_training_state, epoch_steps, validation_batches
from orchestrator.strategy import FitData

CONFIG = {"hidden_layers": 2, "width": 32, "learning_rate": 1e-3, "lambda": 1e-4}


@pytest.fixture(scope="module")
def digits():
    from tests.helpers import digits as shared_digits

    return shared_digits()


def fit_and_watch(digits, prebuild: bool) -> tuple[list, list, list]:
    """Fit scratch_mlp for two epochs; return its traces, the variables made in
    traced functions, and its weights."""
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = ScratchMLP().build(dict(CONFIG), digits.task, None)
    traces = []
    train_step = model.train_step

    def counted(data):
        traces.append(data)
        return train_step(data)

    model.train_step = counted
    if prebuild:
        build_training_state(model, digits.x_train, digits.y_train)
    made_in_graph = []

    def creator(next_creator, **kwargs):
        if tf.inside_function():
            made_in_graph.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        model.fit(
            digits.x_train,
            digits.y_train,
            validation_data=(digits.x_val, digits.y_val),
            epochs=2,
            batch_size=32,
            verbose=0,
        )
    return traces, made_in_graph, [w.copy() for w in model.get_weights()]


def test_with_the_state_built_first_the_training_function_traces_once(digits):
    lazy_traces, lazy_made, lazy_weights = fit_and_watch(digits, prebuild=False)
    traces, made, weights = fit_and_watch(digits, prebuild=True)

    # Keras makes the optimizer's slots and the metrics' totals inside the first
    # trace, and TensorFlow then traces again: what build_training_state saves.
    assert lazy_made, "Keras no longer builds lazily: build_training_state may go"
    assert len(lazy_traces) == 2
    assert made == []
    assert len(traces) == 1
    # The same training, to the last bit of every weight.
    assert len(weights) == len(lazy_weights)
    for ours, theirs in zip(weights, lazy_weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_building_twice_or_without_compile_or_from_odd_data_changes_nothing(digits):
    import keras

    keras.backend.clear_session()
    model = ScratchMLP().build(dict(CONFIG), digits.task, None)
    build_training_state(model, digits.x_train, digits.y_train)
    slots = list(model.optimizer.variables)
    build_training_state(model, digits.x_train, digits.y_train)
    assert list(model.optimizer.variables) == slots

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    weights = list(plain.variables)
    build_training_state(plain, np.zeros((3, 4), "float32"), np.zeros(3))  # not compiled
    assert list(plain.variables) == weights
    assert not plain.compiled

    fresh = ScratchMLP().build(dict(CONFIG), digits.task, None)
    build_training_state(fresh, object(), None)  # cannot be sliced: left to fit
    assert not fresh.optimizer.built
    fresh.fit(digits.x_train[:64], digits.y_train[:64], epochs=1, verbose=0)
    assert fresh.optimizer.built


def fit_one_way(digits, ours: bool, epochs: int, plain_steps: int | None = None):
    """A fresh scratch_mlp fitted with Strategy.fit (ours) or with a plain model.fit
    (training state built first, as ours does; ``plain_steps`` its steps_per_epoch)."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    strategy = ScratchMLP()
    model = strategy.build(dict(CONFIG), digits.task, None)
    if ours:
        data = FitData(digits.x_train, digits.y_train, digits.x_val, digits.y_val, 32)
        return strategy.fit(model, dict(CONFIG), data, epochs=epochs, callbacks=[])
    build_training_state(model, digits.x_train, digits.y_train)
    model.fit(
        digits.x_train,
        digits.y_train,
        validation_data=(digits.x_val, digits.y_val),
        epochs=epochs,
        batch_size=32,
        steps_per_epoch=plain_steps,
        verbose=0,
    )
    return model


def fit_counting_iterators(
    digits, monkeypatch, ours: bool, epochs: int = 3
) -> tuple[int, list, dict]:
    """Fit one way (see fit_one_way); return how many input iterators the training
    data got, the weights and the history."""
    from keras.src.backend.tensorflow import trainer

    made = []
    get_iterator = trainer.TFEpochIterator._get_iterator

    def counted(self):
        made.append(self)
        return get_iterator(self)

    with monkeypatch.context() as patch:
        patch.setattr(trainer.TFEpochIterator, "_get_iterator", counted)
        model = fit_one_way(digits, ours, epochs)
    training = made[0]  # the first made: validation starts after the first epoch
    weights = [w.copy() for w in model.get_weights()]
    return sum(it is training for it in made), weights, model.history.history


@pytest.fixture(scope="module")
def ours_watched(digits):
    """One Strategy.fit of three epochs (see fit_one_way), watched for both tests that
    compare it with a plain fit: the input iterators its training data got (as
    fit_counting_iterators counts them) and the sizes of the array pipelines Keras made
    (as fit_watching_pipelines records them). Returns (iterators, weights, sizes,
    history); tests read these and change nothing."""
    with pytest.MonkeyPatch.context() as monkeypatch, array_pipelines(monkeypatch) as sizes:
        # The same fit as fit_watching_pipelines' ours=True: its plain_steps is
        # read only by a plain fit.
        iterators, weights, history = fit_counting_iterators(digits, monkeypatch, ours=True)
    return iterators, weights, list(sizes), history


def test_strategy_fit_makes_one_input_iterator_per_epoch_to_the_same_weights(
    digits, monkeypatch, ours_watched
):
    theirs, their_weights, _ = fit_counting_iterators(digits, monkeypatch, ours=False)
    ours, weights, _, _ = ours_watched

    # Keras makes one at each epoch's start and discards the one it made at the
    # end of the epoch before; with steps_per_epoch given, that one is used.
    assert theirs == 6, "Keras no longer makes two iterators an epoch: epoch_steps may go"
    assert ours == 4  # one for each of the 3 epochs, and the one made after the last
    for a, b in zip(weights, their_weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("hidden_layers", "width"), [(1, 16), (3, 48)])
def test_scratch_mlps_width_and_hidden_layers_shape_its_model(hidden_layers, width, digits):
    """Found by mutation testing: a width or a number of hidden layers fixed in
    build went unnoticed (the leaderboard still listed the searched values)."""
    import keras

    keras.backend.clear_session()
    config = {**CONFIG, "hidden_layers": hidden_layers, "width": width}
    model = ScratchMLP().build(config, digits.task, None)
    hidden = [layer for layer in model.layers if layer.name.startswith("head_dense")]
    assert [layer.units for layer in hidden] == [width] * hidden_layers
    assert model.get_layer("head_output").units == digits.task.n_classes


def test_safe_variance_sets_only_a_variance_of_zero_to_one():
    """Constant is a variance of 0, whatever the unit: a feature in km varies by
    less than 1e-8 and must still be scaled (found by QA; found by mutation testing:
    the threshold of 1e-8 came back unnoticed)."""
    from orchestrator.models import safe_variance

    got = safe_variance(np.array([1e-10, 0.0, 4.0]))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([1e-10, 1.0, 4.0], "float32"))


def test_epoch_steps_counts_the_last_partial_batch_and_leaves_odd_data_to_keras():
    assert epoch_steps(np.zeros(64), 32) == 2
    assert epoch_steps(np.zeros(65), 32) == 3
    assert epoch_steps(np.zeros(0), 32) is None
    assert epoch_steps(object(), 32) is None


@contextlib.contextmanager
def array_pipelines(monkeypatch):
    """Yields a list that gets the size of the data of every pipeline Keras makes from
    arrays while the block runs."""
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    sizes: list[int] = []
    get_tf_dataset = ArrayDataAdapter.get_tf_dataset

    def watched(self):
        sizes.append(self._num_samples)
        return get_tf_dataset(self)

    with monkeypatch.context() as patch:
        patch.setattr(ArrayDataAdapter, "get_tf_dataset", watched)
        yield sizes


def fit_watching_pipelines(digits, monkeypatch, ours: bool, epochs: int = 3) -> tuple[list, dict]:
    """Fit one way (see fit_one_way; both with steps_per_epoch); return the sizes of the
    data Keras made its array pipeline for, and the history."""
    with array_pipelines(monkeypatch) as sizes:
        model = fit_one_way(digits, ours, epochs, plain_steps=epoch_steps(digits.y_train, 32))
    return sizes, model.history.history


def test_strategy_fit_validates_on_plain_batches_with_the_same_metrics(
    digits, monkeypatch, ours_watched
):
    theirs, their_history = fit_watching_pipelines(digits, monkeypatch, ours=False)
    _, _, ours, history = ours_watched

    training, validation = len(digits.y_train), len(digits.y_val)
    assert training != validation
    assert sorted(theirs) == sorted([training, validation])
    # Validation arrays never go through Keras' array pipeline (see validation_batches).
    assert ours == [training]
    # Every epoch's training and validation metrics, to the last bit.
    assert history == their_history
    assert set(history) >= {"val_accuracy", "val_loss"}


def test_validation_batches_are_fits_batches_in_keras_dtypes():
    x = np.arange(70 * 3, dtype="float64").reshape(70, 3)
    y = np.arange(70) % 4
    batches = list(validation_batches((x, y), 32).as_numpy_iterator())

    assert [len(b[1]) for b in batches] == [32, 32, 6]
    assert batches[0][0].dtype == np.float32  # Keras casts floats to floatx
    assert batches[0][1].dtype == y.dtype
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x.astype("float32"))
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    # Empty or length-less data is left to Keras.
    empty = (np.zeros((0, 3)), np.zeros(0))
    assert validation_batches(empty, 32) is empty


def test_a_trial_evaluates_on_plain_batches_to_keras_numbers(digits, monkeypatch):
    from orchestrator.models import evaluate_arrays

    model = fit_one_way(digits, ours=True, epochs=1)
    theirs = model.evaluate(digits.x_test, digits.y_test, verbose=0, return_dict=True)
    with array_pipelines(monkeypatch) as sizes:
        ours = evaluate_arrays(model, digits.x_test, digits.y_test)
    assert ours == theirs
    assert sizes == []
    # Empty data is left to Keras: what model.evaluate gives, whatever that is.
    empty = digits.x_test[:0], digits.y_test[:0]
    assert evaluate_arrays(model, *empty) == model.evaluate(*empty, verbose=0, return_dict=True)


def one_epoch_spec(strategy, run_dir, *, batch_size=64):
    """A trial of one epoch without a base, for :func:`orchestrator.trial.run_trial`."""
    from orchestrator.trial import TrialSpec

    return TrialSpec(
        strategy=strategy,
        base=None,
        max_epochs=1,
        batch_size=batch_size,
        seed=0,
        metric="val_accuracy",
        run_dir=run_dir,
    )


def test_a_trial_whose_model_outputs_logits_fails_saying_so(digits, tmp_path):
    """Found by QA: a model ending in logits was trained, ranked on a loss of the
    wrong formula and saved; predict gave "probabilities" below 0 and above 1.
    (The pre-flight catches it at the smallest configuration; a trial, at any.)"""
    from orchestrator.trial import run_trial
    from tests.broken_strategies import LogitsOut

    spec = one_epoch_spec(LogitsOut(), tmp_path)
    result = run_trial(CONFIG, spec, digits, trial_id="t", report=lambda metrics: None)
    assert result.status == "error", result
    assert "logits_out.build returned a model with outputs that are not class probabilities" in (
        result.error
    )
    assert "softmax" in result.error
    assert not list(tmp_path.rglob("*.keras"))


def test_a_trial_whose_last_step_makes_its_weights_nan_is_diverged(digits, tmp_path):
    """One step an epoch (a batch larger than the data) at a learning rate of 1e300:
    the only step's loss is finite, the weights after it are not. The trial was `ok`
    with a validation score of chance, ranked, and its model predicted NaN."""
    from orchestrator.trial import run_trial

    spec = one_epoch_spec(ScratchMLP(), tmp_path, batch_size=len(digits.y_train) + 1)
    reports = []
    config = {**CONFIG, "learning_rate": 1e300}
    result = run_trial(config, spec, digits, trial_id="t", report=reports.append)
    assert result.status == "diverged", result
    assert "NaN or infinite" in result.error
    assert "after its last training step" in result.error
    assert result.model_path is None
    assert not list(tmp_path.rglob("*.keras"))
    assert result.val_loss is None and result.test_loss is None
    assert reports and reports[-1]["epoch"] == 1


def test_a_diverged_trial_keeps_no_score_of_an_epoch_that_scored_nan_outputs(digits, tmp_path):
    """As above over two epochs: the first epoch's loss is finite, but its one step
    left NaN weights, whose validation scored every example the first class; the
    second epoch's loss is NaN. The trial is diverged with no validation score, not
    that epoch's chance accuracy (found by QA; its guard was found untested by
    mutation testing)."""
    import dataclasses

    from orchestrator.trial import run_trial

    spec = one_epoch_spec(ScratchMLP(), tmp_path, batch_size=len(digits.y_train) + 1)
    spec = dataclasses.replace(spec, max_epochs=2)
    reports = []
    config = {**CONFIG, "learning_rate": 1e300}
    result = run_trial(config, spec, digits, trial_id="t", report=reports.append)
    assert result.status == "diverged", result
    assert "loss became NaN or infinite in epoch 2" in result.error
    first = reports[0]
    assert first["epoch"] == 1 and math.isnan(first["val_loss"]), first
    assert result.val_accuracy is None and result.val_loss is None


def test_a_trials_saved_model_holds_no_optimizer_state_and_predicts_the_same(digits, tmp_path):
    """Found by QA: a trial's model.keras held Adam's two variables for each trained
    weight (two thirds of a fine-tuned ResNet50's 284 MB file) and its compile
    settings, which made every load build them again; predict and export never
    use them, and a resumed run trains an unfinished trial from its start."""
    import io
    import json
    import zipfile

    import h5py
    import keras

    from orchestrator.trial import PREDICTIONS_FILE, run_trial, save_model

    spec = one_epoch_spec(ScratchMLP(), tmp_path)
    result = run_trial(CONFIG, spec, digits, trial_id="t", report=lambda metrics: None)
    assert result.status == "ok", result
    with zipfile.ZipFile(result.model_path) as archive:
        config = json.loads(archive.read("config.json"))
        with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
            groups = set(weights)
    assert "optimizer" not in groups, groups
    assert not config.get("compile_config"), config["compile_config"]
    loaded = keras.saving.load_model(result.model_path, safe_mode=True)
    saved = np.load(Path(result.model_path).parent / PREDICTIONS_FILE)
    np.testing.assert_allclose(loaded.predict(digits.x_test, verbose=0), saved, atol=1e-6)

    # The model saved is left as it was: compiled, its optimizer trained on.
    model = ScratchMLP().build(dict(CONFIG), digits.task, None)
    model.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    optimizer = model.optimizer
    save_model(model, tmp_path / "again.keras")
    assert model.optimizer is optimizer and model.compiled
    assert int(optimizer.iterations) > 0
    model.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)


def test_trials_in_one_process_leave_neither_their_graphs_nor_their_variables(digits, tmp_path):
    """Each trace of a training step on TensorFlow registers a custom gradient in
    TensorFlow's global table, which held the traced graph and with it the model's
    and optimizer's variables, for good: a reused Ray worker (or a keras_tuner
    search's process) grew by every trial's weights until it was replaced. A caller's
    own custom gradients stay registered."""
    import gc

    import tensorflow as tf
    from tensorflow.python.framework import ops
    from tensorflow.python.framework.func_graph import FuncGraph

    from orchestrator.trial import run_trial

    @tf.custom_gradient
    def doubled(x):
        return 2 * x, lambda upstream: 2 * upstream

    @tf.function
    def callers(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = doubled(x)
        return tape.gradient(y, x)

    assert float(callers(tf.constant(1.0))) == 2.0
    registry = ops._gradient_registry._registry
    callers_own = set(registry)

    def graphs() -> int:
        gc.collect()
        return sum(isinstance(o, FuncGraph) for o in gc.get_objects())

    spec = one_epoch_spec(ScratchMLP(), tmp_path)
    results = [run_trial(CONFIG, spec, digits, trial_id="first", report=lambda m: None)]
    after_one = graphs()
    results += [
        run_trial(CONFIG, spec, digits, trial_id=f"t{i}", report=lambda m: None) for i in range(2)
    ]
    assert [r.status for r in results] == ["ok"] * 3
    assert graphs() == after_one

    def pruned(metrics):  # how Ray Tune ends a trial a scheduler stopped
        raise SystemExit(0)

    import dataclasses

    # At its last report (after fit), and at its first of two (inside fit).
    for epochs in (1, 2):
        try:
            run_trial(
                CONFIG,
                dataclasses.replace(spec, max_epochs=epochs),
                digits,
                trial_id=f"pruned{epochs}",
                report=pruned,
            )
        except SystemExit:
            pass  # (not pytest.raises: its record of the exception holds the trial's frames)
        else:
            pytest.fail("the trial did not end as Tune ended it")
        assert graphs() == after_one, epochs
    assert set(registry) == callers_own  # the caller's own kept, the trials' gone
    assert float(callers(tf.constant(1.0))) == 2.0


def test_model_problems_names_a_model_without_a_loss_or_on_another_input_shape() -> None:
    """Found by mutation testing: a strategy's model compiled without a loss, or built
    on another input shape than the task's, passed the pre-flight with those checks
    dropped (every trial then failed in Keras' words)."""
    import keras

    from orchestrator.preflight import model_problems

    def model(shape: tuple[int, ...], **compile_args: object) -> keras.Model:
        built = keras.Sequential([keras.Input(shape), keras.layers.Dense(3, activation="softmax")])
        built.compile(optimizer="adam", metrics=["accuracy"], **compile_args)
        return built

    loss = {"loss": "sparse_categorical_crossentropy"}
    assert model_problems(model((64,), **loss), 3, (64,)) == []
    assert model_problems(model((64,)), 3, (64,)) == [
        "build() returned a model compiled without a loss"
    ]
    assert model_problems(model((10,), **loss), 3, (64,)) == [
        "build() returned a model whose input has shape (10,); the task's inputs have "
        "shape (64,) (build the model on keras.Input(task.input_shape))"
    ]
