"""Transfer learning done right: L2-SP, two-phase fine-tuning, the frozen-feature cache."""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest

from orchestrator.builtin_plugins.feature_extraction import FeatureExtraction
from orchestrator.builtin_plugins.fine_tune import FineTune
from orchestrator.trial import TrialSpec, load_trial_model, run_trial


@pytest.fixture(scope="module")
def digits():
    from tests.helpers import digits as shared_digits

    return shared_digits()


def small_cnn(random: str | None = None):
    """A small CNN base; ``random`` puts a layer random in training after its second
    convolution: ``"dropout"`` (Dropout) or ``"flip"`` (RandomFlip, augmentation)."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="r1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.Activation("relu", name="r2")(x)
    if random == "dropout":
        x = keras.layers.Dropout(0.3, name="drop")(x)
    elif random == "flip":
        x = keras.layers.RandomFlip("horizontal", name="flip")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="c3")(x)
    x = keras.layers.Activation("relu", name="r3")(x)
    return keras.Model(inputs, x, name="small_cnn")


@pytest.fixture
def base_info(tmp_path, monkeypatch, digits):
    return make_base(tmp_path, monkeypatch, digits)


def make_base(tmp_path, monkeypatch, digits, random=None, name="base.keras"):
    from orchestrator.bases import prepare_base
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import BaseSpec

    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "cache"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    small_cnn(random).save(path)
    host = get_plugin_manager()
    return prepare_base(
        BaseSpec(path=path),
        host.bases,
        digits.task,
        seed=0,
        base_dir=tmp_path,
        data_sources=host.data_sources,
    )


def trial(strategy, config, digits, base_info, tmp_path, *, cache=True, epochs=3, trial_id="t"):
    spec = TrialSpec(
        strategy=strategy,
        base=base_info,
        max_epochs=epochs,
        batch_size=64,
        seed=7,
        metric="val_accuracy",
        run_dir=tmp_path / "run",
        feature_cache=cache,
    )
    return run_trial(config, spec, digits, trial_id=trial_id, report=lambda metrics: None)


FE_CONFIG = {"head_width": 32, "head_depth": 1, "lambda": 1e-5, "learning_rate": 1e-2}


def ft_config(**changes):
    config = {
        "frozen_layers": 2,
        "head_width": 32,
        "regularizer": "l2",
        "lambda": 1e-5,
        "learning_rate": 3e-3,
        "two_phase": False,
    }
    config.update(changes)
    return config


# -- L2-SP ----------------------------------------------------------------------


def test_l2sp_penalty_equals_its_formula():
    import keras

    from orchestrator.models import regularize_trainable_kernels

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    start = [layer.kernel.numpy().copy() for layer in model.layers]
    assert regularize_trainable_kernels(model, 0.5, "l2sp") == 2
    assert float(sum(model.losses)) == pytest.approx(0.0, abs=1e-7)
    for layer in model.layers:
        layer.kernel.assign(layer.kernel.numpy() + 0.1)
    expected = sum(
        0.5 * np.sum((layer.kernel.numpy() - w0) ** 2)
        for layer, w0 in zip(model.layers, start, strict=True)
    )
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    # And plain L2 is 0.5 * ||w||^2.
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    regularize_trainable_kernels(other, 0.5, "l2")
    assert float(sum(other.losses)) == pytest.approx(
        0.5 * np.sum(other.layers[0].kernel.numpy() ** 2), rel=1e-5
    )


def test_with_a_large_lambda_l2sp_keeps_the_weights_near_their_start(digits, base_info, tmp_path):
    import keras

    from orchestrator.bases import load_base

    distances = {}
    for lambda_ in (1e-6, 10.0):
        keras.utils.set_random_seed(0)
        base = load_base(base_info)
        start = {w.path: w.numpy().copy() for w in base.model.weights}
        config = ft_config(frozen_layers=0, regularizer="l2sp", learning_rate=1e-2)
        config["lambda"] = lambda_
        model = FineTune().build(config, digits.task, base)
        model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
        distances[lambda_] = sum(
            float(np.sum((w.numpy() - start[w.path]) ** 2)) for w in base.model.trainable_weights
        )
    assert distances[10.0] < distances[1e-6] / 10


def saved_base(model, digits, tmp_path, monkeypatch):
    """``model`` saved and prepared as a recipe's ``base: {path: ...}`` is."""
    from orchestrator.bases import prepare_base
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import BaseSpec

    model.save(tmp_path / "own.keras")
    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "cache"))
    host = get_plugin_manager()
    return prepare_base(
        BaseSpec(path=tmp_path / "own.keras"), host.bases, digits.task, seed=0,
        base_dir=tmp_path, data_sources=host.data_sources,
    )  # fmt: skip


@pytest.mark.parametrize("form", ["l2", "l2sp"])
def test_the_recipes_penalty_replaces_one_the_base_was_saved_with(
    digits, tmp_path, monkeypatch, form
):
    """A base layer saved with its own kernel_regularizer kept it, and ignored the
    recipe's regularizer and lambda (unless two_phase cleared it in phase 2)."""
    import keras

    from orchestrator.bases import load_base

    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    own = keras.regularizers.L2(1e-9)
    x = keras.layers.Conv2D(4, 3, padding="same", kernel_regularizer=own, name="c1")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="c2")(x)
    info = saved_base(keras.Model(inputs, x), digits, tmp_path, monkeypatch)
    base = load_base(info)
    FineTune().build(
        ft_config(frozen_layers=0, regularizer=form, **{"lambda": 0.5}), digits.task, base
    )
    kernels = [base.model.get_layer(name).kernel for name in ("c1", "c2")]
    for kernel in kernels:
        kernel.assign(kernel.numpy() + 0.1)
    moved = 0.1**2 * sum(k.numpy().size for k in kernels)  # l2sp: from the pretrained values
    expected = 0.5 * (moved if form == "l2sp" else sum(np.sum(k.numpy() ** 2) for k in kernels))
    assert float(sum(base.model.losses)) == pytest.approx(expected, rel=1e-4)


def test_no_penalty_a_base_was_saved_with_stays_in_a_trials_loss(digits, tmp_path, monkeypatch):
    """Found by QA: a base saved with a bias and an activity regularizer kept them,
    at lambda 0 too: fine_tune trained against them, and they put a constant in
    feature_extraction's loss that a trial on cached features did not have."""
    import keras

    from orchestrator.bases import load_base
    from orchestrator.builtin_plugins.feature_extraction import FeatureExtraction

    keras.utils.set_random_seed(1)
    own = keras.regularizers.L2(0.5)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(
        4, 3, name="c1", kernel_regularizer=own, bias_regularizer=own, activity_regularizer=own
    )(inputs)
    x = keras.layers.BatchNormalization(gamma_regularizer=own, name="bn")(x)
    x = keras.layers.Conv2D(4, 3, name="c2", bias_regularizer=own)(x)
    saved = keras.Model(inputs, x)
    for name in ("c1", "c2"):
        saved.get_layer(name).bias.assign(np.full(4, 0.3, "float32"))
    info = saved_base(saved, digits, tmp_path, monkeypatch)
    x, y = digits.x_train[:32], digits.y_train[:32]
    builds = [
        (FineTune(), ft_config(frozen_layers=0, **{"lambda": 0.0})),
        (FeatureExtraction(), {"head_width": 8, "head_depth": 1, "lambda": 0.0, "learning_rate": 1e-3}),
    ]  # fmt: skip
    for strategy, config in builds:
        base = load_base(info)
        model = strategy.build(config, digits.task, base)
        scores = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        assert scores["loss"] == pytest.approx(scores["cross_entropy"], abs=1e-6), strategy.name
        assert not model.losses, strategy.name
    # With lambda, the kernels carry the recipe's penalty and nothing else does.
    base = load_base(info)
    model = FineTune().build(ft_config(frozen_layers=0, **{"lambda": 1e-3}), digits.task, base)
    penalised = sorted(v.path for v in model.trainable_weights if v.regularizer is not None)
    assert penalised == ["c1/kernel", "c2/kernel", "head_dense1/kernel", "head_output/kernel"]
    # Nor does a model saved with the base put them back when loaded.
    config = base.model.get_layer("c1").get_config()
    assert config["bias_regularizer"] is None
    assert config["activity_regularizer"] is None
    # A trial on features cached at the base's output is put back together on the
    # base as saved (found by QA: its fingerprint was taken without the penalties,
    # and the run ended in BaseMismatch, "made again since the run").
    keras.utils.set_random_seed(2)
    done = trial(FeatureExtraction(), FE_CONFIG, digits, info, tmp_path, epochs=1)
    assert done.status == "ok" and done.cached_cut == info.n_cut_points, done.error
    folder = tmp_path / "run" / "trials" / "feature_extraction" / "t"
    whole = load_trial_model(folder, info, digits.task.input_shape)
    np.testing.assert_allclose(
        whole.predict(digits.x_test, verbose=0),
        np.load(folder / "test_probabilities.npy"),
        rtol=1e-4,
        atol=1e-5,
    )


def test_penalties_come_off_recurrent_wrapped_and_custom_layers():
    """Found by QA: an RNN's kernel_regularizer is a property without a setter (every
    trial on an LSTM base saved with a penalty failed), and a custom layer's own
    ``scale_regularizer`` went on into the saved model."""
    import keras

    from orchestrator.models import clear_regularizers

    own = keras.regularizers.L2(0.5)

    class Scale(keras.layers.Layer):
        def __init__(self, scale_regularizer=None, **kwargs):
            super().__init__(**kwargs)
            self.scale_regularizer = keras.regularizers.get(scale_regularizer)

        def build(self, input_shape):
            self.scale = self.add_weight(
                shape=(input_shape[-1],), initializer="ones", regularizer=self.scale_regularizer
            )

        def call(self, x):
            return x * self.scale

        def get_config(self):
            regularizer = keras.regularizers.serialize(self.scale_regularizer)
            return {**super().get_config(), "scale_regularizer": regularizer}

    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    rnn = keras.layers.GRU(
        4, return_sequences=True, kernel_regularizer=own, recurrent_regularizer=own,
        bias_regularizer=own, activity_regularizer=own,
    )  # fmt: skip
    x = keras.layers.Bidirectional(rnn)(inputs)
    x = keras.layers.LSTM(4, kernel_regularizer=own, recurrent_regularizer=own)(x)
    x = Scale(scale_regularizer=own, name="scale")(x)
    # A sublayer kept under such a name is no penalty (found by QA: it was cleared).
    held = keras.layers.Dense(4, name="held")
    model_layer = keras.layers.Lambda(lambda t: t, name="holder")
    model_layer.noise_regularizer = held
    model = keras.Model(inputs, x)
    model(np.ones((2, 5, 3), "float32"))
    assert model.losses
    clear_regularizers(model)
    clear_regularizers(model_layer)
    assert model_layer.noise_regularizer is held
    model(np.ones((2, 5, 3), "float32"))
    assert not model.losses
    said = json.dumps(model.get_config())
    assert '"class_name": "L2"' not in said, said


def test_lambda_reaches_an_rnns_recurrent_kernel():
    """Found by QA: a base with an LSTM had its input kernel penalised, not its recurrent one."""
    import keras

    from orchestrator.models import regularize_trainable_kernels

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    assert regularize_trainable_kernels(model, 0.5, "l2") == 3
    expected = sum(0.5 * np.sum(v.numpy() ** 2) for v in model.weights if v.name.endswith("kernel"))
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_lambda_reaches_separable_depthwise_and_embedding_kernels():
    """Xception's and NASNet's SeparableConv2D hold depthwise and pointwise kernels, an
    Embedding its embeddings: λ covers each (found by mutation testing: a KERNEL_NAMES
    without depthwise_kernel or embeddings passed every test)."""
    import keras

    from orchestrator.models import regularize_trainable_kernels

    keras.utils.set_random_seed(0)
    image = keras.Input((6, 6, 2))
    x = keras.layers.SeparableConv2D(3, 3)(image)
    x = keras.layers.DepthwiseConv2D(2)(x)
    tokens = keras.Input((4,), dtype="int32")
    words = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(tokens))
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(x), words])
    model = keras.Model([image, tokens], keras.layers.Dense(2)(joined))
    kernels = [v for v in model.weights if "kernel" in v.name or v.name == "embeddings"]
    assert sorted(v.name for v in kernels) == [  # DepthwiseConv2D's is "kernel"
        "depthwise_kernel", "embeddings", "kernel", "kernel", "pointwise_kernel"
    ]  # fmt: skip
    assert regularize_trainable_kernels(model, 0.5, "l2") == 5
    expected = sum(0.5 * np.sum(v.numpy() ** 2) for v in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)


def test_regularizer_is_searched_and_shown(digits, base_info, tmp_path):
    space = FineTune().search_space(None)
    assert set(space["regularizer"].values) == {"l2", "l2sp"}
    result = trial(FineTune(), ft_config(regularizer="l2sp"), digits, base_info, tmp_path)
    assert result.status == "ok", result.error
    assert result.config["regularizer"] == "l2sp"


@pytest.mark.parametrize(("width", "depth"), [(16, 1), (48, 2)])
def test_the_heads_width_and_depth_shape_the_transfer_models(width, depth, digits, base_info):
    """Found by mutation testing: feature_extraction's head_depth and fine_tune's
    head_width fixed in build went unnoticed (the leaderboard still listed the
    searched values); and the feature maps are average-pooled, as documented."""
    import keras

    from orchestrator.bases import load_base

    extraction = FeatureExtraction().build(
        {**FE_CONFIG, "head_width": width, "head_depth": depth}, digits.task, load_base(base_info)
    )
    fine = FineTune().build(ft_config(head_width=width), digits.task, load_base(base_info))
    for model, layers in ((extraction, depth), (fine, 1)):
        hidden = [layer for layer in model.layers if layer.name.startswith("head_dense")]
        assert [layer.units for layer in hidden] == [width] * layers, model.name
        assert isinstance(model.get_layer("pool"), keras.layers.GlobalAveragePooling2D)


# -- two-phase fine-tuning ---------------------------------------------------------


def two_phase_model(digits, base_info, config):
    """fine_tune's model of ``config`` on the base, and the base's weights above its
    first cut point (which only a second phase trains) with their values now."""
    from orchestrator.bases import load_base

    base = load_base(base_info)
    strategy = FineTune()
    model = strategy.build(config, digits.task, base)
    cut = base.info.cut_points[0]
    above = [w for layer in base.model.layers[cut + 1 :] for w in layer.trainable_weights]
    return strategy, model, above, [w.numpy().copy() for w in above]


def test_two_phase_trains_the_head_first_then_unfreezes_at_a_lower_rate(
    digits, base_info, tmp_path
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from orchestrator.models import KERNEL_NAMES
    from orchestrator.strategy import FitData
    from orchestrator.trial import _tensorboard

    config = ft_config(frozen_layers=1, two_phase=True, learning_rate=1e-2)
    strategy, model, above, start = two_phase_model(digits, base_info, config)
    kernels = [w for w in above if w.name in KERNEL_NAMES]
    assert kernels
    seen, penalised = [], []

    import keras

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            moved = any(not np.array_equal(w.numpy(), s) for w, s in zip(above, start, strict=True))
            seen.append((lr, moved))
            penalised.append(all(w.regularizer is not None for w in kernels))

    data = FitData(digits.x_train, digits.y_train, digits.x_val, digits.y_val, 64)
    strategy.fit(model, config, data, epochs=4, callbacks=[Watch(), _tensorboard(tmp_path)])
    # One head epoch at the full rate with the base untouched, three at a tenth.
    assert seen[0] == (pytest.approx(1e-2), False)
    assert [lr for lr, _ in seen[1:]] == [pytest.approx(1e-3)] * 3
    assert seen[-1][1] is True
    assert len(seen) == 4
    # The base it unfreezes trains under λ (found by mutation testing: with the
    # penalties cleared for phase 2 and not put back, λ and regularizer did
    # nothing to the base, unnoticed).
    assert penalised[1:] == [True] * 3
    # TensorBoard draws the two phases as one curve of four epochs.
    events = EventAccumulator(str(tmp_path / "tensorboard" / "validation"))
    events.Reload()
    assert [event.step for event in events.Tensors("epoch_accuracy")] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("epochs", "rates"),
    [(1, [1e-2]), (6, [1e-2] * 2 + [1e-3] * 4)],
    ids=["one_epoch", "six_epochs"],
)
def test_two_phase_gives_the_head_a_rounded_quarter_and_one_epoch_trains_one_phase(
    epochs, rates, digits, base_info
):
    """Found by mutation testing: with 1 epoch, a two-phase trial trained only its head
    (the whole base frozen) while its note said "trained in one phase", unnoticed;
    and the head phase of 6 epochs is round(6 / 4) = 2, not 1."""
    import keras

    from orchestrator.strategy import FitData

    config = ft_config(frozen_layers=1, two_phase=True, learning_rate=1e-2)
    strategy, model, above, start = two_phase_model(digits, base_info, config)
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    data = FitData(digits.x_train, digits.y_train, digits.x_val, digits.y_val, 64)
    strategy.fit(model, config, data, epochs=epochs, callbacks=[Watch()])
    assert seen == [pytest.approx(rate) for rate in rates]
    # Above frozen_layers the base trained, in one phase as in two.
    assert any(not np.array_equal(w.numpy(), s) for w, s in zip(above, start, strict=True))


def test_two_phase_stops_where_a_callback_stopped_its_head_phase(digits, base_info):
    """A stop asked in the head phase (divergence, a scheduler, a time budget) ends
    the trial there: no second phase unfreezes the base (found by mutation testing:
    unchecked)."""
    import keras

    from orchestrator.strategy import FitData

    config = ft_config(frozen_layers=1, two_phase=True)
    strategy, model, above, start = two_phase_model(digits, base_info, config)
    epochs = []

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs.append(epoch)
            self.model.stop_training = True

    data = FitData(digits.x_train, digits.y_train, digits.x_val, digits.y_val, 64)
    strategy.fit(model, config, data, epochs=4, callbacks=[Stop()])
    assert epochs == [0]
    assert all(np.array_equal(w.numpy(), s) for w, s in zip(above, start, strict=True))


def test_two_phase_with_one_epoch_is_noted_by_validate_and_in_its_trials(
    digits, base_info, tmp_path
):
    """With max_epochs 1 fit() trains one phase: a choice [false, true] ran the
    same training twice, listed as two configurations."""
    from typer.testing import CliRunner

    from orchestrator.cli import app

    said = "two_phase needs at least 2 epochs, and a trial has 1: trained in one phase"
    one = trial(FineTune(), ft_config(two_phase=True), digits, base_info, tmp_path, epochs=1)
    assert one.status == "ok", one.error
    assert said in one.note and one.note.startswith("features computed up to cut")
    two = trial(
        FineTune(), ft_config(two_phase=True), digits, base_info, tmp_path, epochs=2, trial_id="u"
    )
    assert said not in (two.note or "")

    recipe = tmp_path / "recipe.yaml"
    text = (
        "name: tp\ndata: {source: sklearn:digits}\n"
        "base: {pretrain: {data: {source: sklearn:digits}, epochs: 1}}\n"
        "strategies: {fine_tune: {space: {two_phase: {choice: [false, true]}}}}\n"
        "search: {backend: keras_tuner, max_epochs: EPOCHS}\noutput: runs/\n"
    )
    recipe.write_text(text.replace("EPOCHS", "1"))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    assert f"note: fine_tune: {said} (its space gives two_phase: true)" in result.stdout, (
        result.stdout
    )
    recipe.write_text(text.replace("EPOCHS", "2"))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 0 and "note:" not in result.stdout, result.output
    # Every configuration gives it (two_phase fixed): no dimension is blamed for it
    # (it named frozen_layers, the first one tried).
    from orchestrator.preflight import space_notes
    from orchestrator.space import Choice, Fixed

    space = {"frozen_layers": Choice((0, 2)), "two_phase": Fixed(True)}
    assert space_notes(FineTune(), space, 1, "graftune") == [f"note: fine_tune: {said}"]


# -- the frozen-feature cache --------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "config"),
    [(FeatureExtraction(), FE_CONFIG), (FineTune(), ft_config())],
    ids=["feature_extraction", "fine_tune"],
)
def test_cached_and_uncached_trials_agree(strategy, config, digits, base_info, tmp_path):
    """Also: cache=False turns the cache off (the plain trial, run first, writes no
    features)."""
    plain = trial(strategy, config, digits, base_info, tmp_path, cache=False, trial_id="plain")
    assert plain.status == "ok"
    assert not (tmp_path / "cache" / "features").exists()
    cached = trial(strategy, config, digits, base_info, tmp_path, cache=True, trial_id="cached")
    assert cached.status == plain.status == "ok"
    assert cached.note.startswith("features computed up to cut")
    assert plain.note == "feature cache off: the recipe's cache: false"  # said, as other ways
    assert cached.val_accuracy == pytest.approx(plain.val_accuracy, abs=0.03)
    assert cached.params_total == plain.params_total
    assert cached.params_trainable == plain.params_trainable
    # The trial saved the part above the cut; put back behind the prefix, it is
    # the whole model: raw inputs in, the cached model's predictions out.
    assert cached.model_path.endswith("top.keras") and plain.model_path.endswith("model.keras")
    top_cut = base_info.n_cut_points
    assert cached.cached_cut == (top_cut if strategy.name == "feature_extraction" else 2)
    folder = tmp_path / "run" / "trials" / strategy.name / "cached"
    whole = load_trial_model(folder, base_info, digits.task.input_shape)
    in_run = np.load(
        tmp_path / "run" / "trials" / strategy.name / "cached" / "test_probabilities.npy"
    )
    np.testing.assert_allclose(
        whole.predict(digits.x_test, verbose=0), in_run, rtol=1e-4, atol=1e-5
    )
    # The prefix stays frozen, as in the uncached trial's model (it was put back
    # trainable: training the whole model again moved the "frozen" base).
    import keras

    uncached = keras.saving.load_model(plain.model_path, safe_mode=True)
    trainable = sum(int(np.prod(w.shape)) for w in whole.trainable_weights)
    assert (
        trainable
        == plain.params_trainable
        == sum(int(np.prod(w.shape)) for w in uncached.trainable_weights)
    )
    # Also: the cached trial's model is refused on a base made again, in the same
    # file, from other weights (it is put back behind that file's prefix).
    import shutil

    kept = tmp_path / "kept.keras"
    shutil.copyfile(base_info.path, kept)
    try:
        other = keras.saving.load_model(base_info.path, safe_mode=True, compile=False)
        other.set_weights([w + 0.5 for w in other.get_weights()])
        other.save(base_info.path)  # the same file, made again from other weights
        with pytest.raises(ValueError, match="whose weights are not those of"):
            load_trial_model(folder, base_info, digits.task.input_shape)
    finally:
        shutil.copyfile(kept, base_info.path)
    assert load_trial_model(folder, base_info, digits.task.input_shape) is not None


def test_a_trial_on_features_cached_at_the_base_output_never_loads_the_base(digits, base_info):
    from orchestrator.bases import load_base

    for strategy, config in [
        (FeatureExtraction(), FE_CONFIG),
        (FineTune(), ft_config(frozen_layers=base_info.n_cut_points)),
    ]:
        base = load_base(base_info)
        base.cached_cut = base_info.n_cut_points
        base.feature_shape = tuple(base_info.output_shape)
        model = strategy.build(config, digits.task, base)
        assert model.input_shape[1:] == base.feature_shape
        assert not base.loaded, strategy.name
    # Above a lower cut the trial trains part of the base, which is then loaded.
    base = load_base(base_info)
    base.cached_cut = 2
    base.feature_shape = tuple(base.model.layers[base.cut_layer(2)].output.shape[1:])
    FineTune().build(ft_config(frozen_layers=2), digits.task, base)
    assert base.loaded


class IgnoresTheCache(FeatureExtraction):
    """Declares the whole base frozen, and builds on the data, not on
    ``base.inputs_and_features``: every trial failed with Keras' shape error."""

    name = "ignores_the_cache"

    def build(self, config, task, base):
        import keras

        from orchestrator.models import classifier_head, compile_classifier, pooled

        inputs = keras.Input(task.input_shape)
        features = pooled(base.model(base.adapt(inputs)))
        outputs = classifier_head(features, task.n_classes, width=8, depth=1, lambda_=0.0)
        return compile_classifier(keras.Model(inputs, outputs), 1e-3)


def test_a_model_not_built_on_the_cached_features_fails_naming_the_way(digits, base_info, tmp_path):
    result = trial(IgnoresTheCache(), FE_CONFIG, digits, base_info, tmp_path, epochs=1)
    assert result.status == "error"
    assert result.error == (
        f"TypeError: strategy ignores_the_cache.frozen_prefix returned {base_info.n_cut_points}, "
        "so its model is fed the base's features cached at that cut point, of shape "
        f"{tuple(base_info.output_shape)}, but it takes (8, 8, 1): build it on "
        f"base.inputs_and_features(task, {base_info.n_cut_points})"
    )
    # Without the cache it is fed the data, which it takes.
    assert (
        trial(
            IgnoresTheCache(),
            FE_CONFIG,
            digits,
            base_info,
            tmp_path,
            epochs=1,
            cache=False,
            trial_id="u",
        ).status
        == "ok"
    )


class OwnInputOfTheFeatureShape(FeatureExtraction):
    """Builds on an input of its own that has the cached features' shape (as a
    base whose cut keeps the data's shape gives): the shapes agreed, the trial
    passed, and the cached features ran through the base again."""

    name = "own_input_of_the_feature_shape"

    def build(self, config, task, base):
        import keras

        from orchestrator.models import classifier_head, compile_classifier, pooled

        given, _ = base.inputs_and_features(task, base.info.n_cut_points)
        inputs = keras.Input(tuple(given.shape[1:]))
        outputs = classifier_head(pooled(inputs), task.n_classes, width=8, depth=1, lambda_=0.0)
        return compile_classifier(keras.Model(inputs, outputs), 1e-3)


def test_a_model_on_an_input_of_the_features_shape_not_the_given_one_fails(
    digits, base_info, tmp_path
):
    result = trial(OwnInputOfTheFeatureShape(), FE_CONFIG, digits, base_info, tmp_path, epochs=1)
    assert result.status == "error"
    shape = tuple(base_info.output_shape)
    assert result.error == (
        f"TypeError: strategy own_input_of_the_feature_shape.frozen_prefix returned "
        f"{base_info.n_cut_points}, so its model is fed the base's features cached at that cut "
        f"point, of shape {shape}, but it takes an input of its own of shape {shape}: build it "
        f"on base.inputs_and_features(task, {base_info.n_cut_points})"
    )


def test_base_info_knows_its_cut_points_without_the_model(base_info, tmp_path, monkeypatch, digits):
    import json

    import keras

    from orchestrator.bases import BaseInfo, load_base

    model = keras.saving.load_model(base_info.path, safe_mode=True)
    assert len(base_info.cut_params) == base_info.n_cut_points
    assert list(base_info.cut_params) == sorted(base_info.cut_params)
    assert base_info.cut_params[-1] == model.count_params()
    assert base_info.random_layers == ()
    assert BaseInfo.from_json(json.loads(json.dumps(base_info.to_json()))) == base_info
    noisy = make_base(tmp_path / "noisy", monkeypatch, digits, random="flip")
    assert [name for _, name in noisy.random_layers] == ["flip"]
    last = noisy.n_cut_points
    assert load_base(noisy).stochastic_prefix_layers(last) == ["flip"]
    # Dropout runs as in inference where the base is frozen (LoadedBase.freeze).
    dropped = make_base(tmp_path / "dropped", monkeypatch, digits, random="dropout")
    assert dropped.random_layers == ()


def test_frozen_weights_are_unchanged_after_a_trial(digits, base_info, tmp_path):
    import keras

    from orchestrator.bases import nested_layers

    trial(FineTune(), ft_config(frozen_layers=1), digits, base_info, tmp_path, epochs=2)
    saved = load_trial_model(
        tmp_path / "run" / "trials" / "fine_tune" / "t", base_info, digits.task.input_shape
    )
    original = keras.saving.load_model(base_info.path, safe_mode=True)
    saved_layers = {layer.name: layer for layer in nested_layers(saved)}
    # c1 and bn1 are below the first cut point; c3 is above it and trained.
    for name in ("c1", "bn1"):
        for before, after in zip(
            original.get_layer(name).weights, saved_layers[name].weights, strict=True
        ):
            np.testing.assert_array_equal(after.numpy(), before.numpy())
    assert not np.array_equal(
        saved_layers["c3"].kernel.numpy(), original.get_layer("c3").kernel.numpy()
    )


def test_features_are_computed_once_and_shared(digits, base_info, tmp_path, monkeypatch):
    """Also: a trial on cached features of the whole base does not load the base
    (the third trial's spy)."""
    import keras

    from orchestrator.bases import load_base
    from orchestrator.feature_cache import cache_entries, cached_features

    first, computed = cached_features(load_base(base_info), 2, digits)
    again, computed_again = cached_features(load_base(base_info), 2, digits)
    assert (computed, computed_again) == (True, False)
    assert isinstance(again["train"], np.memmap)
    np.testing.assert_array_equal(first["val"], again["val"])
    (entry,) = [e for e in cache_entries() if e.kind == "features"]
    assert "cut 2" in entry.description
    second = trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, trial_id="a")
    loaded = []
    real = keras.saving.load_model

    def spy(path, *args, **kwargs):
        loaded.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(keras.saving, "load_model", spy)
    third = trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, trial_id="b")
    assert second.note.startswith("features computed")
    assert third.status == "ok", third.error
    assert third.note == f"features from cache up to cut {base_info.n_cut_points}"
    assert str(base_info.path) not in loaded


def test_cache_info_tells_an_entry_being_made_from_one_a_kill_left(digits, base_info):
    """Found by QA: features a run was computing were listed as "incomplete", as
    those a killed run left are; their lock says which."""
    from orchestrator.bases import load_base, locked
    from orchestrator.feature_cache import cache_entries, feature_key, features_dir

    folder = features_dir() / feature_key(load_base(base_info), 2, digits)[:32]
    folder.mkdir(parents=True)
    (folder / "train.npy").write_bytes(b"partial")

    def said() -> str:
        (entry,) = [e for e in cache_entries() if e.path == folder]
        return entry.description

    assert said() == "incomplete"  # no lock: a kill left it
    with locked(folder.with_suffix(".lock")):  # as cached_features holds it while it computes
        assert said() == "being made now, by a graftune process on this machine"
    assert said() == "incomplete"


def test_an_entry_computed_again_drops_what_a_killed_computation_left(digits, base_info):
    from orchestrator.bases import load_base
    from orchestrator.feature_cache import cached_features, feature_key, features_dir

    base = load_base(base_info)
    folder = features_dir() / feature_key(base, 2, digits)[:32]
    folder.mkdir(parents=True)
    left = [folder / "train.12345.tmp.npy", folder / "meta.json.tmp"]  # killed midway
    for path in left:
        path.write_bytes(b"partial")

    _, computed = cached_features(base, 2, digits)

    assert computed
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json",
        "test.npy",
        "train.npy",
        "val.npy",
    ]


def test_damaged_features_are_named_and_computed_again(digits, base_info, tmp_path):
    """Found by QA: a train.npy cut short failed every trial ("mmap length is
    greater than file size", then "every trial failed") without naming the entry."""
    from orchestrator.bases import load_base
    from orchestrator.feature_cache import cache_entries, cached_features

    first = trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, trial_id="a")
    (entry,) = [e for e in cache_entries() if e.kind == "features"]
    train = entry.path / "train.npy"
    with open(train, "r+b") as handle:
        handle.truncate(5000)
    (entry,) = [e for e in cache_entries() if e.kind == "features"]
    assert entry.description.startswith(
        "damaged: train.npy cannot be read (cut short?): mmap length is greater than file size"
    )

    again = trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, trial_id="b")

    assert again.status == "ok", again.error
    assert again.note == (
        f"features computed again up to cut {base_info.n_cut_points}: the cached features "
        f"{entry.path} could not be read (train.npy cannot be read (cut short?): mmap length "
        "is greater than file size)"
    )
    assert again.val_accuracy == first.val_accuracy  # on the same features
    # A whole entry of another shape than its meta.json says is computed again too.
    features, computed = cached_features(load_base(base_info), base_info.n_cut_points, digits)
    assert not computed and list(features["train"].shape) == [len(digits.x_train), 8, 8, 16]
    np.save(train, np.zeros((3, 8, 8, 16), dtype="float32"))
    said = []
    _, computed = cached_features(
        load_base(base_info), base_info.n_cut_points, digits, damaged=said.append
    )
    assert computed
    assert said[0].endswith(
        f"(train.npy holds float32 [3, 8, 8, 16], its meta.json says float32 "
        f"[{len(digits.x_train)}, 8, 8, 16])"
    )
    # Of the right shape, rewritten as float64: cache info says so too (found by
    # mutation testing: only the shape was tested, and the entry was listed as healthy).
    shape = [len(digits.x_train), 8, 8, 16]
    np.save(train, np.zeros(shape, dtype="float64"))
    (entry,) = [e for e in cache_entries() if e.kind == "features"]
    assert entry.description == (
        f"damaged: train.npy holds float64 {shape}, its meta.json says float32 {shape} "
        "(computed again by the next run that needs it)"
    )


def test_features_written_over_with_other_values_are_computed_again(digits, base_info):
    """Found by QA: a test.npy of zeros of the right shape was read by every later
    run, its test scores wrong. (cache info reads no whole file: it lists such an
    entry until a trial finds it.)"""
    import pathlib

    from orchestrator import feature_cache
    from orchestrator.bases import load_base
    from orchestrator.feature_cache import cached_features

    cut = base_info.n_cut_points
    features, _ = cached_features(load_base(base_info), cut, digits)
    right = np.array(features["test"])
    path = pathlib.Path(features["test"].filename)
    np.save(path, np.zeros_like(right))
    feature_cache._VERIFIED.clear()  # as a new process
    said: list[str] = []
    features, computed = cached_features(load_base(base_info), cut, digits, damaged=said.append)
    assert computed and said == [
        f"the cached features {path.parent} could not be read (test.npy is not what was "
        "written (its digest differs))"
    ]
    np.testing.assert_array_equal(features["test"], right)
    # Not an array file at all: said so, not "cut short", nor numpy's advice to unpickle.
    path.write_bytes(b"notnpy\n")  # what echo notnpy > test.npy leaves
    said.clear()
    _, computed = cached_features(load_base(base_info), cut, digits, damaged=said.append)
    assert computed and said[0].endswith("(test.npy is not an array file numpy wrote)"), said


@pytest.mark.parametrize("kind", ["a file", "a link to nothing"])
def test_a_features_folder_that_is_a_file_is_named(kind, digits, base_info, tmp_path):
    """Found by QA: every trial's note said "cannot write in CACHE: File exists",
    cache info said nothing, and cache clear --features "freed 0 B", exit 0. A
    features/ that is a link to nothing likewise (found by mutation testing: only
    the file was tested)."""
    import shutil

    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.feature_cache import features_dir

    shutil.rmtree(features_dir(), ignore_errors=True)
    if kind == "a file":
        features_dir().write_text("")
    else:
        features_dir().symlink_to(tmp_path / "gone")
    try:
        said = f"{features_dir()} is {kind}, where graftune keeps its entries: remove it"
        for command in (["cache", "info"], ["cache", "clear", "--features"]):
            result = CliRunner().invoke(app, command)
            assert result.exit_code == 2, result.output
            assert said in " ".join(result.output.split()), result.output
        done = trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, trial_id="f")
        assert done.status == "ok" and done.note.startswith("feature cache off: ")
        assert said in done.note, done.note
    finally:
        features_dir().unlink()


def test_cache_info_and_clear_take_a_broken_meta_json(digits, base_info, tmp_path):
    """Found by QA: a meta.json that is no JSON, or lacks graftune's fields, made
    `cache info` and `cache clear` fail with a traceback: the entry could not be cleared."""
    from typer.testing import CliRunner

    from orchestrator.bases import load_base
    from orchestrator.cli import app
    from orchestrator.feature_cache import cache_entries, cached_features, features_dir

    cached_features(load_base(base_info), 3, digits)
    cached_features(load_base(base_info), 2, digits)
    folders = sorted(p for p in features_dir().iterdir() if p.is_dir())
    (folders[0] / "meta.json").write_text('{"key": ')
    (folders[1] / "meta.json").write_text('{"key": "abc"}')
    runner = CliRunner()

    info = runner.invoke(app, ["cache", "info"])

    assert info.exit_code == 0, info.output
    described = {e.path: e.description for e in cache_entries()}
    assert described[folders[0]].startswith("damaged: meta.json is unreadable: Expecting value")
    assert described[folders[1]] == (
        "damaged: meta.json lacks the shapes of its arrays (computed again by the next run "
        "that needs it)"
    )
    assert folders[0].name in info.output and folders[1].name in info.output
    cleared = runner.invoke(app, ["cache", "clear", "--features"])
    assert cleared.exit_code == 0, cleared.output
    assert not any(folder.exists() for folder in folders)


def test_cache_invalidation(digits, base_info, tmp_path, monkeypatch):
    from orchestrator.bases import load_base
    from orchestrator.data import prepare_dataset
    from orchestrator.feature_cache import feature_key
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import DataSpec

    base = load_base(base_info)
    key = feature_key(base, 2, digits)
    assert feature_key(base, 1, digits) != key
    fewer = prepare_dataset(
        DataSpec(source="sklearn:digits", labels_per_class=20),
        get_plugin_manager().data_sources,
        seed=0,
        base_dir=".",
    )
    assert feature_key(base, 2, fewer) != key
    import keras

    keras.utils.set_random_seed(99)
    other_base = make_base(tmp_path / "b", monkeypatch, digits, name="other.keras")
    assert other_base.fingerprint != base_info.fingerprint
    assert feature_key(load_base(other_base), 2, digits) != key
    # The same weights and data through another input adapter (a provider's scaling
    # chosen by its options): other features (found by mutation testing: unchecked).
    import dataclasses

    scaled = load_base(dataclasses.replace(base_info, adapter=(("preprocess", "tf"),)))
    assert feature_key(scaled, 2, digits) != key
    # TensorFlow's kernels change the features' last digits (found by QA: oneDNN's
    # features were served to a run with it off).
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert feature_key(base, 2, digits) != key
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert feature_key(base, 2, digits) == key
    # As TensorFlow reads it (found by QA: 1, true and TRUE made an entry each).
    for same in ("true", "TRUE", " True "):
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", same)
        assert feature_key(base, 2, digits) == key, same
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "false")
    off = feature_key(base, 2, digits)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert feature_key(base, 2, digits) == off != key
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    for same in ("0", "false", ""):  # TensorFlow's default: off
        monkeypatch.setenv("TF_DETERMINISTIC_OPS", same)
        assert feature_key(base, 2, digits) == key, same


def test_a_random_layer_in_the_base_draws_the_same_numbers_and_turns_the_cache_off(
    digits, tmp_path, monkeypatch
):
    """Two behaviours of one base with a random layer (RandomFlip) before its cut,
    on the same trials:

    - it draws the same numbers for the same seed. A loaded Dropout without a seed of
      its own takes one from Python's random state when it is made; the base was
      loaded before the trial's seed was set, so the same recipe and seed trained
      differently from run to run;
    - a random layer before the cut turns the feature cache off (and below it the
      prefix is pure again: cached)."""
    import random

    info = make_base(tmp_path, monkeypatch, digits, random="flip")
    first = trial(FeatureExtraction(), FE_CONFIG, digits, info, tmp_path, epochs=2, trial_id="a")
    random.seed(12345)  # as another process would start
    second = trial(FeatureExtraction(), FE_CONFIG, digits, info, tmp_path, epochs=2, trial_id="b")
    assert first.status == second.status == "ok"
    trials = tmp_path / "run" / "trials" / "feature_extraction"
    np.testing.assert_array_equal(
        np.load(trials / "a" / "test_probabilities.npy"),
        np.load(trials / "b" / "test_probabilities.npy"),
    )
    # The cache is off for both.
    assert first.note == second.note == "feature cache off: flip before the cut is random"
    assert not (tmp_path / "cache" / "features").exists()
    # Below the flip the prefix is pure again.
    fine = trial(
        FineTune(), ft_config(frozen_layers=1), digits, info, tmp_path, epochs=1, trial_id="f"
    )
    assert fine.note.startswith("features computed")


def test_dropout_in_the_frozen_part_runs_as_in_inference_and_the_cache_serves_it(
    digits, tmp_path, monkeypatch
):
    """Found by QA: Keras 3 runs a nested model's layers in training mode during fit,
    over the base(x, training=False) the strategies build with, so a frozen base's
    dropout (EfficientNet's stochastic depth, in every block) stayed random: the
    frozen base was no fixed function of its input, and its features were never
    cached (EfficientNet's and EfficientNetV2's trials ran ten times slower)."""
    import keras

    from orchestrator.bases import load_base

    info = make_base(tmp_path, monkeypatch, digits, random="dropout")
    cached = trial(FeatureExtraction(), FE_CONFIG, digits, info, tmp_path, epochs=2, trial_id="c")
    whole = trial(
        FeatureExtraction(), FE_CONFIG, digits, info, tmp_path, cache=False, epochs=2, trial_id="w"
    )
    assert cached.status == whole.status == "ok"
    assert cached.note.startswith("features computed"), cached.note
    assert cached.cached_cut == info.n_cut_points and whole.cached_cut is None
    assert cached.val_accuracy == pytest.approx(whole.val_accuracy, abs=0.02)

    base = load_base(info)
    drop = base.model.get_layer("drop")
    x = np.ones((1, *drop.input.shape[1:]), "float32")
    inputs, features = base.inputs_and_features(digits.task, info.n_cut_points)
    assert np.array_equal(np.asarray(drop(x, training=True)), x)  # frozen: as in inference
    # Also where the dropout is itself the cut-point layer (weightless layers join
    # the cut before them): frozen up to it, it is held (found by mutation testing:
    # only a dropout strictly inside the frozen part was tried).
    assert base.model.layers[info.cut_points[1]] is drop
    base.freeze(2)
    assert np.array_equal(np.asarray(drop(x, training=True)), x)
    base.freeze(1)  # the dropout above the cut trains as it was built to
    assert not np.array_equal(np.asarray(drop(x, training=True)), x)
    # Saved as built: loaded, it is the Dropout its class makes.
    path = tmp_path / "saved.keras"
    base.freeze(info.n_cut_points)
    keras.Model(inputs, features).save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert "call" not in vars(loaded.get_layer("small_cnn").get_layer("drop"))


def test_cache_info_and_clear_commands(digits, base_info, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.bases import load_base
    from orchestrator.cli import app
    from orchestrator.feature_cache import cached_features

    cached_features(load_base(base_info), 3, digits)
    runner = CliRunner()
    info = runner.invoke(app, ["cache", "info"])
    assert info.exit_code == 0, info.output
    assert "features" in info.output
    # Of which cached base (found by QA: every pretrain's read alike).
    shown = " ".join(info.output.split())
    assert f"({base_info.path.parent.name}) up to cut 3" in shown
    # And the data's digest (found by QA: data changed in place under one name read alike).
    assert f"on {digits.source} (data {digits.task.fingerprint[:12]}): " in shown
    assert "made with" not in shown  # graftune's own numerics go unsaid
    assert "base" in info.output
    # An entry of other numerics is told apart (found by QA: two read alike).
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    cached_features(load_base(base_info), 3, digits)
    shown = " ".join(runner.invoke(app, ["cache", "info"]).output.split())
    assert shown.count(f"({base_info.path.parent.name}) up to cut 3") == 2
    assert "made with TF_ENABLE_ONEDNN_OPTS=off" in shown
    assert "unused" not in shown
    # Found by upgrade QA: one made before features were keyed by their numerics is
    # found by no run again, and was listed as any other.
    from orchestrator.feature_cache import features_dir

    (old,) = [
        m
        for m in features_dir().glob("*/meta.json")
        if json.loads(m.read_text())["numerics"]["TF_ENABLE_ONEDNN_OPTS"] == "off"
    ]
    meta = json.loads(old.read_text())
    del meta["numerics"]
    old.write_text(json.dumps(meta))
    shown = " ".join(runner.invoke(app, ["cache", "info"]).output.split())
    assert shown.count("unused (made by an earlier graftune, before features were keyed") == 1
    cleared = runner.invoke(app, ["cache", "clear", "--features"])
    assert cleared.exit_code == 0
    assert "freed" in cleared.output
    after = runner.invoke(app, ["cache", "info"])
    assert "up to cut 3" not in after.output
    assert "base" in after.output


def test_cache_clear_waits_for_runs_and_whole_entries_need_no_lock(digits, base_info, tmp_path):
    """Found by QA: `cache clear` while a run was going freed its base, and every
    transfer trial after failed (the run exited 0); a half-written base was listed
    as a base; and a read-only, pre-filled cache could not be used (reading an
    entry took its lock, which means writing the lock file)."""
    from typer.testing import CliRunner

    from orchestrator.bases import cache_dir, load_base, using_cache
    from orchestrator.cli import app
    from orchestrator.feature_cache import cached_features, features_dir

    runner = CliRunner()
    cached_features(load_base(base_info), 3, digits)
    for lock in [*features_dir().glob("*.lock"), *(cache_dir() / "bases").glob("*.lock")]:
        lock.unlink()
    _, computed = cached_features(load_base(base_info), 3, digits)
    assert not computed
    assert not list(features_dir().glob("*.lock"))  # read without taking the lock

    with using_cache():  # as a run on this machine holds it, from start to end
        refused = runner.invoke(app, ["cache", "clear"])
    assert refused.exit_code == 2, refused.output
    assert f"the cache {cache_dir()} is in use by a graftune run on this machine" in (
        refused.output
    )
    assert len(list(features_dir().iterdir())) == 1  # nothing removed

    half = cache_dir() / "bases" / "pretrain-0123456789abcdef"
    half.mkdir(parents=True)
    (half / "base.123.tmp.keras").write_bytes(b"partial")
    info = runner.invoke(app, ["cache", "info"])
    assert next(line for line in info.output.splitlines() if half.name in line).split()[-1] == (
        "incomplete"
    )
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.output
    assert "empty" in runner.invoke(app, ["cache", "info"]).output


def test_a_run_without_a_base_leaves_the_cache_free_to_clear(tmp_path):
    """Found by QA: any run held the cache, so `cache clear` was refused while a run
    that never reads it (no base: no base to load, no features) was going."""
    from orchestrator import run_recipe
    from orchestrator.bases import cache_dir
    from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP
    from orchestrator.feature_cache import clear_cache
    from tests.broken_strategies import Registers
    from tests.search_helpers import write_recipe

    cache_dir().mkdir(parents=True, exist_ok=True)  # a clear of no folder takes no lock
    cleared = []

    class ClearingMLP(ScratchMLP):
        name = "clearing_mlp"
        description = "clears the cache as it trains"

        def fit(self, model, config, data, *, epochs, callbacks):
            cleared.append(clear_cache())  # raises CacheInUse where the run holds it
            return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)

    recipe = write_recipe(
        tmp_path, "{backend: keras_tuner, num_samples: 1, max_epochs: 1}", "clearing_mlp: {}"
    )
    outcome = run_recipe(recipe, plugins=[Registers(ClearingMLP)])
    assert list(outcome.leaderboard["status"]) == ["ok"], outcome.leaderboard.get("error")
    assert len(cleared) == 1


def test_cache_clear_removes_only_its_own_entries_and_follows_no_link(digits, base_info, tmp_path):
    """Found by QA: `cache clear` removed every folder under the cache's `bases/` and
    `features/` (a $GRAFTUNE_CACHE_DIR set to a folder of the user's own lost its
    `features/embeddings`), and those of a folder a linked `features/` led to."""
    from typer.testing import CliRunner

    from orchestrator.bases import cache_dir, load_base
    from orchestrator.cli import app
    from orchestrator.feature_cache import cached_features, features_dir

    runner = CliRunner()
    cached_features(load_base(base_info), 3, digits)
    entries = [p for p in features_dir().iterdir() if p.is_dir()]
    assert entries
    own = [cache_dir() / "bases" / "resnet_finetunes", features_dir() / "embeddings_v1"]
    for folder in own:
        folder.mkdir()
        (folder / "keep.txt").write_text("the user's")
    info = runner.invoke(app, ["cache", "info"])
    assert "embeddings_v1" not in info.output and "resnet_finetunes" not in info.output

    elsewhere = tmp_path / "elsewhere"
    features_dir().rename(elsewhere)
    features_dir().symlink_to(elsewhere)
    cleared = runner.invoke(app, ["cache", "clear", "--features"])
    assert f"{features_dir()}: a symbolic link (to {elsewhere}), not followed" in " ".join(
        cleared.output.split()
    )
    assert {e.name for e in entries} <= {p.name for p in elsewhere.iterdir()}

    features_dir().unlink()
    elsewhere.rename(features_dir())
    cleared = runner.invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.output
    assert not any(entry.exists() for entry in entries)
    assert all((folder / "keep.txt").read_text() == "the user's" for folder in own)


def test_cache_clear_says_what_it_could_not_remove_and_frees_only_what_went(
    digits, base_info, monkeypatch
):
    """Found by mutation testing: with what a removal left behind dropped, `cache
    clear` said "freed ..." and exited 0; and it counted a partly removed entry's
    bytes as all freed. (Root may remove anything: the removal is made to fail.)"""
    from typer.testing import CliRunner

    from orchestrator import feature_cache
    from orchestrator.bases import load_base
    from orchestrator.cli import app
    from orchestrator.feature_cache import cache_entries, cached_features, clear_cache

    cached_features(load_base(base_info), 3, digits)
    (entry,) = [e for e in cache_entries() if e.kind == "features"]
    left = max((p for p in entry.path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    kept = left.stat().st_size
    assert 0 < kept < entry.size_bytes

    def remove_all_but_one(path):
        for p in path.rglob("*"):
            if p.is_file() and p != left:
                p.unlink()
        return [f"{left}: Permission denied"]

    monkeypatch.setattr(feature_cache, "_remove_tree", remove_all_but_one)
    freed, failed = clear_cache(("features",))
    assert freed == entry.size_bytes - kept
    assert failed == [f"{left}: Permission denied"]
    result = CliRunner().invoke(app, ["cache", "clear", "--features"])
    assert result.exit_code == 1, result.output
    assert f"could not remove {left}: Permission denied" in " ".join(result.stderr.split())


def test_clearing_a_cache_whose_lock_cannot_be_made_says_so_only_with_entries(
    digits, base_info, monkeypatch
):
    """A read-only (shared) cache: its entries cannot be removed, and clear says so,
    naming the lock; with nothing to remove it frees 0 B without a word (found by
    mutation testing: the test of entries was reversed unnoticed)."""
    from orchestrator import feature_cache
    from orchestrator.bases import IN_USE_LOCK, load_base
    from orchestrator.feature_cache import cached_features, clear_cache

    def read_only(root, how):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(feature_cache, "lock_in_use", read_only)
    assert clear_cache(("features",)) == (0, [])  # only the base's entry there
    cached_features(load_base(base_info), 3, digits)
    freed, failed = clear_cache(("features",))
    assert freed == 0
    assert len(failed) == 1 and f"its lock {IN_USE_LOCK} cannot be made" in failed[0]
    assert "Permission denied" in failed[0]


def test_a_run_holds_a_cache_it_cannot_write_from_a_clear(tmp_path, monkeypatch):
    """Found by QA: a run in another user's cache (its lock file not writable) held no
    lock, and that user's `cache clear` removed the base the run was using. flock
    asks no write: the lock file is opened to read. (A read-only mount here: root
    may write any file.)"""
    from orchestrator.bases import IN_USE_LOCK, using_cache
    from orchestrator.errors import CacheInUse
    from orchestrator.feature_cache import clear_cache
    from tests.helpers import tmpfs

    with tmpfs(tmp_path / "cache", "1m") as cache:
        entry = cache / "bases" / "pretrain-0123456789abcdef"
        entry.mkdir(parents=True)
        (entry / "base.keras").write_bytes(b"a base")
        (cache / IN_USE_LOCK).touch()
        subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
        monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(cache))
        with using_cache(), pytest.raises(CacheInUse):
            clear_cache()
        assert (entry / "base.keras").read_bytes() == b"a base"


def test_a_run_says_it_waits_for_a_cache_clear(tmp_path, monkeypatch):
    """Found by QA: a run started during `graftune cache clear` waited without a word."""
    import fcntl
    import threading

    from orchestrator.bases import cache_dir, lock_in_use, using_cache

    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "cache"))
    clearing = lock_in_use(cache_dir(), fcntl.LOCK_EX)  # as `cache clear` holds it
    said: list = []
    held = threading.Event()

    def a_run() -> None:
        with using_cache(said.append):
            held.set()

    thread = threading.Thread(target=a_run, daemon=True)
    thread.start()
    for _ in range(300):
        if said:
            break
        time.sleep(0.1)
    assert said == [cache_dir()] and not held.is_set()  # told, and waiting
    clearing.close()
    thread.join(30)
    assert held.is_set()
    with using_cache(said.append):  # nothing to wait for: nothing said
        assert said == [cache_dir()]


def test_a_refused_run_leaves_no_cache_behind(tmp_path, monkeypatch):
    """Found by QA: a recipe refused at its data (or base) exits 2 and writes
    nothing, but left a new, empty cache folder with its in-use lock. A cache
    folder the run made is removed when the run put nothing in it, unless
    another run holds it; one with entries stays."""
    import fcntl

    from typer.testing import CliRunner

    from orchestrator.bases import IN_USE_LOCK, cache_dir, lock_in_use, using_cache
    from orchestrator.cli import app

    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "t.csv").write_text("a,b,y\n1,x,0\n2,y,1\n3,z,0\n4,w,1\n")
    (tmp_path / "r.yaml").write_text(
        "name: r\ndata: {source: 'csv:t.csv', target: y}\nstrategies: {scratch_mlp: {}}\n"
    )
    refused = CliRunner().invoke(app, ["run", str(tmp_path / "r.yaml")])
    assert refused.exit_code == 2, refused.output
    assert "non-numeric column(s) 'b'" in refused.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "t.csv"]

    with using_cache():
        other = lock_in_use(cache_dir(), fcntl.LOCK_SH)  # a second run started meanwhile
    with other:
        assert (cache_dir() / IN_USE_LOCK).stat().st_ino == os.fstat(other.fileno()).st_ino
    (cache_dir() / IN_USE_LOCK).unlink()
    cache_dir().rmdir()
    # Refused at a base it could not make (imagenet weights offline): the base's lock.
    with using_cache():
        (cache_dir() / "bases").mkdir()
        (cache_dir() / "bases" / "application-0123.lock").touch()
    assert not cache_dir().exists()
    with using_cache():
        (cache_dir() / "bases").mkdir()
        (cache_dir() / "bases" / "application-0123.lock").touch()
        (cache_dir() / "bases" / "application-0123").mkdir()
        (cache_dir() / "bases" / "application-0123" / "base.keras").touch()
    assert sorted(p.name for p in cache_dir().iterdir()) == ["bases", IN_USE_LOCK]


def test_a_lock_on_a_removed_in_use_file_is_taken_again(tmp_path):
    """A run that opened the in-use lock as an ending run removed it holds the
    file in the folder, not the removed one (which would hold nothing)."""
    import fcntl
    import threading

    from orchestrator.bases import IN_USE_LOCK, lock_in_use

    root = tmp_path / "cache"
    ending = lock_in_use(root, fcntl.LOCK_EX)
    taken: list = []
    waiter = threading.Thread(target=lambda: taken.append(lock_in_use(root, fcntl.LOCK_SH)))
    waiter.start()
    time.sleep(0.5)  # the waiter has opened the file and waits for its lock
    (root / IN_USE_LOCK).unlink()
    root.rmdir()
    ending.close()
    waiter.join(10)
    (handle,) = taken
    with handle:
        assert (root / IN_USE_LOCK).stat().st_ino == os.fstat(handle.fileno()).st_ino


def test_an_application_base_works_with_the_cache_and_input_adaptation(
    digits, tmp_path, monkeypatch
):

    from orchestrator.bases import prepare_base
    from orchestrator.plugin_manager import get_plugin_manager
    from orchestrator.recipe import BaseSpec

    monkeypatch.setenv("GRAFTUNE_CACHE_DIR", str(tmp_path / "cache"))
    host = get_plugin_manager()
    info = prepare_base(
        BaseSpec(application="MobileNetV3Small", weights="none", input_shape=(32, 32, 3)),
        host.bases,
        digits.task,
        seed=0,
        base_dir=tmp_path,
        data_sources=host.data_sources,
    )
    assert [step[0] for step in info.adapter] == ["resize", "gray_to_rgb", "preprocess"]
    result = trial(FeatureExtraction(), FE_CONFIG, digits, info, tmp_path, epochs=1)
    assert result.status == "ok", result.error
    assert result.note == f"features computed up to cut {info.n_cut_points}"
    folder = tmp_path / "run" / "trials" / "feature_extraction" / "t"
    whole = load_trial_model(folder, info, digits.task.input_shape)
    in_run = np.load(folder / "test_probabilities.npy")
    np.testing.assert_allclose(
        whole.predict(digits.x_test, verbose=0), in_run, rtol=1e-4, atol=1e-5
    )
    # Its size is the whole model's, adapter and all (found by QA: a trial on cached
    # features left out the caffe adapter's 12 weights, and won ties by them).
    assert result.params_total == whole.count_params()


@pytest.mark.parametrize("scaling", ["caffe", "tf", "torch", "raw255"])
def test_the_adapters_weights_are_counted_as_its_layers_hold_them(scaling):
    import keras

    from orchestrator.bases import adapter_params, apply_adapter

    steps = (("resize", 32, 32), ("gray_to_rgb",), ("preprocess", scaling))
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, apply_adapter(inputs, steps))
    assert adapter_params(steps) == model.count_params()
    assert adapter_params(steps[:2]) == 0


def test_a_cache_that_cannot_be_written_leaves_the_trial_to_train_without_it(
    digits, base_info, tmp_path, monkeypatch
):
    from orchestrator import feature_cache

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feature_cache, "cached_features", full)
    result = trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, epochs=1)
    assert result.status == "ok", result.error
    assert result.note.startswith("feature cache off: cannot write in ")
    assert result.note.endswith("No space left on device")
    assert result.cached_cut is None and result.model_path.endswith("model.keras")


def test_features_that_would_take_half_the_free_disk_are_not_cached(digits, base_info, tmp_path):
    """Found by QA: the cache has no bound; an early cut of a convolutional base
    gives features many times the images' size (1.1 GiB for 7,800 images of
    32x32). An entry never takes more than half the free space of its disk."""
    from orchestrator.feature_cache import features_dir
    from tests.helpers import tmpfs

    rows = len(digits.x_train) + len(digits.x_val) + len(digits.x_test)
    need = rows * 8 * 8 * 16 * 4  # the whole base's output, float32
    with tmpfs(features_dir(), f"{need * 3 // 2 // 1024}k"):
        result = trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, epochs=1)
        assert result.status == "ok", result.error
        assert result.note.startswith(
            f"feature cache off up to cut {base_info.n_cut_points}: its features "
            f"({rows} examples of [8, 8, 16]) would take {need / 2**20:.1f} MiB, more than "
            f"half the "
        )
        assert result.note.endswith(f"free where the cache is ({features_dir()})")
        assert result.cached_cut is None and result.model_path.endswith("model.keras")
        assert [p.suffix for p in features_dir().iterdir()] == [".lock"]  # no entry
    with tmpfs(features_dir(), f"{need * 5 // 2 // 1024}k"):
        result = trial(
            FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, epochs=1, trial_id="u"
        )
        assert result.note == f"features computed up to cut {base_info.n_cut_points}"


def test_a_run_says_how_much_its_features_added_to_the_cache(digits, base_info, tmp_path, capsys):
    """Found by QA: a run cached 1.1 GiB of features and nothing said so; `cache
    info` showed the train split's shape beside the size of all three; two runs at
    once each said they made what either made."""
    from orchestrator.bases import cache_dir
    from orchestrator.cli import _say_features_cached
    from orchestrator.feature_cache import (
        cache_entries,
        entries_size,
        feature_entries,
        feature_stamps,
    )

    run_dir = tmp_path / "run"  # the trials' (see trial())
    before = feature_stamps()
    _say_features_cached(before, run_dir)
    assert capsys.readouterr().out == ""  # nothing made, nothing said
    trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, epochs=1)
    assert len(feature_entries()) == 1
    made = entries_size(feature_entries().values())
    said = f"cache: {made / 2**20:.1f} MiB of frozen features made in {cache_dir()}"
    _say_features_cached(before, run_dir)
    assert capsys.readouterr().out.startswith(said)
    _say_features_cached(before, tmp_path / "another run")  # going at the same time
    assert capsys.readouterr().out == ""
    before = feature_stamps()
    _say_features_cached(before, run_dir)
    assert capsys.readouterr().out == ""
    # Found by QA: an entry damaged, and made again by the next run, was not counted.
    (folder,) = feature_entries().values()
    with open(folder / "val.npy", "r+b") as file:
        file.truncate(100)
    trial(FeatureExtraction(), FE_CONFIG, digits, base_info, tmp_path, epochs=1, trial_id="again")
    _say_features_cached(before, run_dir)
    assert capsys.readouterr().out.startswith(said)
    (entry,) = [e for e in cache_entries() if e.kind == "features"]
    counts = f"{len(digits.x_train)}/{len(digits.x_val)}/{len(digits.x_test)}"
    assert entry.description.endswith(f": {counts} examples (train/val/test) of [8, 8, 16]")
