"""Model building blocks the strategies share: heads, regularisation, compiling.

Every layer used here is a built-in Keras layer, so saved models reload with
``safe_mode=True`` and without graftune installed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from orchestrator.errors import first_few

if TYPE_CHECKING:
    import keras
    import numpy as np

    from orchestrator.data import TaskSpec

log = logging.getLogger(__name__)

#: Weight names that hold a layer's kernel (the weights λ regularises). Found by
#: QA: an LSTM, GRU or SimpleRNN base's ``recurrent_kernel`` was left out.
KERNEL_NAMES = ("kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def not_probabilities(outputs: Any) -> str | None:
    """Why a model's outputs (a row per example) are not class probabilities;
    ``None`` when they are, each row in ``[0, 1]`` and summing to 1.

    A model that ends in logits passed every check, was trained and ranked on a
    loss of the wrong formula, and ``predict`` gave "probabilities" below 0.
    Outputs that are not numbers are a divergence, said as such elsewhere.
    """
    import numpy as np

    out = np.asarray(outputs, dtype="float64")
    if out.ndim != 2 or out.size == 0 or not np.isfinite(out).all():
        return None
    # Loose enough for a float16 softmax (mixed precision).
    if out.min() >= -1e-3 and out.max() <= 1 + 1e-3 and np.abs(out.sum(axis=1) - 1).max() <= 1e-2:
        return None
    row = out[np.argmax(np.abs(out.sum(axis=1) - 1))]
    shown = first_few([f"{v:.3g}" for v in row], 4)
    return (
        "outputs that are not class probabilities (each row in [0, 1], summing to 1; "
        f"one was [{shown}]): end the model in a softmax, "
        "e.g. Dense(task.n_classes, activation='softmax')"
    )


def normalized_inputs(task: TaskSpec) -> tuple[Any, Any]:
    """An input of the task's shape, flattened and standardised with training statistics.

    Returns:
        ``(inputs, x)``: the model's input and the tensor to build on.
    """
    import keras

    inputs = keras.Input(task.input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(task.input_shape) > 1 else inputs
    mean = task.feature_mean.reshape(-1)
    variance = safe_variance(task.feature_var.reshape(-1))
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(x)
    return inputs, x


def safe_variance(variance: np.ndarray) -> np.ndarray:
    """Variance with constant features set to 1: a feature never seen to vary in
    training must not be divided by ~0 when it does vary at test time.

    Constant is a variance of 0, whatever the feature's unit: a threshold of 1e-8
    left a feature in km or mol/L (a standard deviation below 1e-4) unscaled, near
    0 for every example, and the models ignored it (found by QA: chance accuracy).
    """
    import numpy as np

    return np.where(variance > 0, variance, 1.0).astype("float32")


def pooled(x: Any) -> Any:
    """Global average pooling over feature maps; flattening for other ranks."""
    import keras

    if len(x.shape) == 4:
        return keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if len(x.shape) > 2:
        return keras.layers.Flatten(name="pool")(x)
    return x


def classifier_head(x: Any, n_classes: int, *, width: int, depth: int, lambda_: float) -> Any:
    """``depth`` ReLU layers of ``width`` units and a softmax, all with L2 ``lambda_``."""
    import keras

    for i in range(depth):
        x = keras.layers.Dense(
            width,
            activation="relu",
            kernel_regularizer=keras.regularizers.L2(lambda_) if lambda_ else None,
            name=f"head_dense{i + 1}",
        )(x)
    return keras.layers.Dense(
        n_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(lambda_) if lambda_ else None,
        name="head_output",
    )(x)


#: The forms of λ: ``l2`` pulls trainable kernels toward 0, ``l2sp`` toward their
#: pretrained values (Li, Grandvalet & Davoine 2018).
REGULARIZERS = ("l2", "l2sp")


def l2sp(alpha: float, reference: np.ndarray) -> Any:
    """The L2-SP penalty ``alpha * ||w - w0||^2`` for one variable whose start is ``reference``."""
    import keras

    reference_tensor = keras.ops.convert_to_tensor(reference)

    class L2SP(keras.regularizers.Regularizer):
        """``alpha * sum((w - w0)^2)``; not serialised (variables' regularizers never are)."""

        def __call__(self, x: Any) -> Any:
            return alpha * keras.ops.sum(keras.ops.square(x - reference_tensor))

        def get_config(self) -> dict[str, Any]:
            return {"alpha": alpha}

    return L2SP()


def regularize_trainable_kernels(model: keras.Model, lambda_: float, form: str = "l2") -> int:
    """Put a penalty of strength ``lambda_`` on the trainable kernels of an existing model.

    ``l2`` adds ``lambda_ * ||w||^2``; ``l2sp`` adds ``lambda_ * ||w - w0||^2`` with
    ``w0`` the kernel's value now (the pretrained one, when called before
    training). Keras adds a variable's regularizer to the loss only while the
    variable is trainable, so frozen layers contribute nothing. Layers of
    nested models are reached too.

    Returns:
        How many kernels were regularised.
    """
    import keras

    if form not in REGULARIZERS:
        raise ValueError(f"regularizer must be one of {', '.join(REGULARIZERS)}, got {form!r}")
    if not lambda_:
        return 0
    count = 0
    for layer in _all_layers(model):
        if not layer.trainable:
            continue
        for variable in layer.trainable_weights:
            if variable.name in KERNEL_NAMES and variable.regularizer is None:
                if form == "l2":
                    variable.regularizer = keras.regularizers.L2(lambda_)
                else:
                    variable.regularizer = l2sp(lambda_, variable.numpy().copy())
                count += 1
    return count


def clear_regularizers(model: keras.Model) -> None:
    """Remove every penalty an existing model puts in the loss of its training.

    Each weight's regularizer (kernels, biases, BatchNorm's ``gamma``/``beta``),
    each layer's ``activity_regularizer``, and the attributes a layer keeps its
    penalties in (``*_regularizer``, Keras' and a custom layer's alike), so that
    a model saved with the base does not put them back when loaded.
    Called on a base when it is loaded for a trial, where the recipe's λ is to be
    the only penalty (found by QA: a base saved with a bias or activity
    regularizer added 14 to a trial's loss at λ 0, a constant in
    ``feature_extraction``'s loss that a trial on cached features did not have),
    and before a second training phase puts λ on again.
    """
    import inspect

    import keras

    # Every layer, also those held outside ``layers`` (an RNN's cell, a
    # Bidirectional's two RNNs).
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for variable in layer.weights:
            variable.regularizer = None
        # Only the layer's own attributes: an RNN's kernel_regularizer is a property
        # that reads its cell's, with no setter (found by QA: every trial on an LSTM
        # base failed), and the cell is cleared as a layer of its own. Only a
        # regularizer or a function: a custom layer's sublayer kept under such a
        # name is no penalty (found by QA: it was taken for one, and the base broke).
        for name, value in list(vars(layer).items()):
            if name.endswith("_regularizer") and (
                isinstance(value, keras.regularizers.Regularizer) or inspect.isroutine(value)
            ):
                setattr(layer, name, None)


def _all_layers(model: Any) -> list[Any]:
    found = []
    for layer in getattr(model, "layers", ()):
        if getattr(layer, "layers", None):
            found += _all_layers(layer)
        else:
            found.append(layer)
    return found


#: Batches run per call of the compiled training (and evaluation) function.
#: Small models on small data spend most of a step in Python and in calling
#: the graph, not in arithmetic: fusing 32 steps into one call trains the
#: same batches in the same order to the same weights, 15-30% faster on the
#: digits MLP (benchmarks/overhead.py). Callbacks' per-batch hooks then run
#: every 32 batches; per-epoch hooks, which the search uses, are unchanged.
STEPS_PER_EXECUTION = 32


def steps_per_execution() -> int:
    """:data:`STEPS_PER_EXECUTION`, or 1 on Keras' PyTorch backend (which runs one step a call)."""
    import keras

    return 1 if keras.backend.backend() == "torch" else STEPS_PER_EXECUTION


#: The metric :func:`compile_classifier` adds: the cross-entropy alone. Keras'
#: ``loss`` (and ``val_loss``) is the training objective, the cross-entropy plus
#: every penalty of the model (λ·R(θ)); a trial reports this one as its
#: ``val_loss``, so that trials of different λ and regularizers compare on
#: their data loss (``orchestrator.trial``).
CROSS_ENTROPY = "cross_entropy"


def compile_classifier(model: keras.Model, learning_rate: float) -> keras.Model:
    """Compile for integer class labels with Adam, an accuracy metric and the
    cross-entropy without penalties (:data:`CROSS_ENTROPY`).

    Runs :func:`steps_per_execution` batches per compiled call.
    """
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name=CROSS_ENTROPY)],
        steps_per_execution=steps_per_execution(),
    )
    return model


def build_training_state(model: keras.Model, x: Any, y: Any) -> None:
    """Create a compiled model's optimizer, loss and metric variables before ``fit``.

    Keras on TensorFlow creates them lazily, inside the first trace of the
    training function, and a ``tf.function`` that creates variables is traced
    a second time and has their initialisers lifted out of the graph. On the
    small models of a search that is a large part of each trial: the first
    epoch of the digits MLP takes 2.1 s instead of 3.0 s with them built here
    (same weights, same results). Built from one sample of ``x`` and ``y``, as
    Keras itself does before ``fit`` under a distribution strategy, the
    training and test functions are each traced once.

    Calling it again, or on a model that is not compiled, does nothing. If the
    model cannot be built this way, ``fit`` builds it as usual.
    """
    import keras

    try:
        sample = keras.tree.map_structure(lambda a: a[:1], (x, y))
        build = getattr(model, "_symbolic_build", None)  # Keras' own step, see above
        if build is not None:
            build(data_batch=sample)
        elif getattr(model, "optimizer", None) is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    except Exception as exc:  # fit builds the same state itself, only later
        log.debug("training state not built before fit: %s: %s", type(exc).__name__, exc)


def validation_batches(validation_data: tuple[Any, Any], batch_size: int) -> Any:
    """Validation (or test) arrays as the batches ``fit`` makes of them, in a dataset made once.

    Given arrays, Keras 3 on TensorFlow feeds validation through the pipeline
    it uses for training data (an index permutation, a parallel gather,
    prefetching) and makes a new iterator over it twice for every epoch's
    validation: one to evaluate on, and one, made at the end, that the next
    evaluation discards. Each starts and stops that pipeline's threads. An
    iterator over plain batches costs next to nothing. The batches are the
    same, in the same order and dtypes (floats in ``keras.config.floatx()``, as
    Keras casts them), so the metrics are too: on the digits MLP, ten epochs'
    ``fit`` took 0.78 s instead of 1.00 s (median of 6, one CPU), with every
    weight and every epoch's metrics equal.

    Returns:
        The dataset; ``validation_data`` itself on another backend or when it
        is empty or has no length (Keras then does as it always does).
    """
    import keras

    if keras.backend.backend() != "tensorflow" or not epoch_steps(validation_data[1], batch_size):
        return validation_data
    import numpy as np
    import tensorflow as tf

    floatx = np.dtype(keras.config.floatx())

    def as_keras_would(array: Any) -> Any:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating) and array.dtype != floatx:
            return array.astype(floatx)
        return array

    arrays = keras.tree.map_structure(as_keras_would, tuple(validation_data))
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)


def epoch_steps(y: Any, batch_size: int) -> int | None:
    """The batches in one pass over ``y``: what to give ``fit`` as ``steps_per_epoch``.

    Given in-memory arrays and no ``steps_per_epoch``, Keras 3 on TensorFlow
    makes a new input iterator at the start of every epoch and discards the
    one it already made, and set prefetching, at the end of the epoch before.
    With the count given, each epoch uses that one instead: the same batches
    in the same order, to the same weights. On a busy CPU (two trials on two
    cores) discarding an iterator whose threads are at work stalls about every
    other epoch by some 80 ms, longer than a whole epoch of the digits MLP
    (about 60 ms); with the count given, its ``fit`` took 1.15 s instead of
    1.57 s (median of 4, one CPU).

    Returns:
        ``ceil(len(y) / batch_size)``, or ``None`` (let Keras count) for data
        without a length or an empty one.
    """
    try:
        samples = len(y)
    except TypeError:
        return None
    if samples <= 0 or batch_size <= 0:
        return None
    return -(-samples // batch_size)


def fit_arrays(
    model: keras.Model,
    x: Any,
    y: Any,
    validation_data: tuple[Any, Any],
    *,
    epochs: int,
    batch_size: int,
    callbacks: list[Any] | None = None,
) -> None:
    """One ``model.fit`` over in-memory arrays, as graftune trains: the default
    ``Strategy.fit`` and the ``pretrain`` stage.

    Builds the training state first (:func:`build_training_state`: one trace,
    not two), gives ``fit`` the epoch's batches (:func:`epoch_steps`: one
    input iterator an epoch, not two) and the validation data as batches made
    once (:func:`validation_batches`); the same batches train to the same
    weights, with the same validation metrics, as a plain ``fit``.
    """
    build_training_state(model, x, y)
    model.fit(
        x,
        y,
        validation_data=validation_batches(validation_data, batch_size),
        epochs=epochs,
        batch_size=batch_size,
        steps_per_epoch=epoch_steps(y, batch_size),
        callbacks=callbacks,
        verbose=0,
    )


#: The name TensorFlow gives each ``tf.custom_gradient`` it registers in graph mode,
#: a number after it (``CustomGradient-1234``).
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


def _gradient_registry() -> dict[str, Any] | None:
    """TensorFlow's global table of gradient functions, if TensorFlow is loaded
    and keeps it where TensorFlow 2.16-2.21 do; else ``None``."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return None
    return registry if isinstance(registry, dict) else None


def traced_gradients() -> frozenset[str]:
    """The custom gradients TensorFlow has registered so far (for
    :func:`forget_traced_gradients`)."""
    registry = _gradient_registry()
    return frozenset(registry or ())


def forget_traced_gradients(kept: frozenset[str]) -> int:
    """Drop the custom gradients TensorFlow registered since ``kept`` was taken.

    Each trace of a Keras training step on TensorFlow registers a
    ``tf.custom_gradient`` (tf.distribute's ``all_reduce``, in the optimizer's
    update) in TensorFlow's global table of gradients under a new name, and
    nothing ever removes it. Its function holds the traced graph, and the graph
    the model's variables and the optimizer's: a process that trained model
    after model kept every one of them, whatever ``clear_session`` and the
    garbage collector did (tensorflow/tensorflow#97697). A reused Ray worker
    grew by each trial's weights and optimizer state (100 MB a trial for an MLP
    of 8.5 million weights) until it was replaced; so did the process of a
    keras_tuner search, or a notebook's, from run to run.

    Call it once the models trained since are dropped, or will not be trained
    again: a gradient through their graphs is never taken again. Gradients
    registered before (a caller's own) are left alone.

    Returns:
        How many were dropped.
    """
    registry = _gradient_registry()
    if registry is None:
        return 0
    new = [
        name
        for name in list(registry)
        if isinstance(name, str) and name.startswith(CUSTOM_GRADIENT_PREFIX) and name not in kept
    ]
    for name in new:
        registry.pop(name, None)
    return len(new)


@contextlib.contextmanager
def forgetting_traced_gradients() -> Iterator[None]:
    """Inside, train models that are dropped (or not trained again) after it: the
    custom gradients their training registered are forgotten at its end
    (:func:`forget_traced_gradients`), so that the garbage collector can free them."""
    kept = traced_gradients()
    try:
        yield
    finally:
        forget_traced_gradients(kept)


#: :func:`evaluate_arrays`' batch size: ``model.evaluate``'s own default.
EVALUATE_BATCH = 32


def evaluate_arrays(model: keras.Model, x: Any, y: Any) -> dict[str, float]:
    """``model.evaluate(x, y)``'s metrics, over batches made once
    (:func:`validation_batches`): a trial's test split, and the ``pretrain``
    stage's.

    The same batches as ``model.evaluate``'s, so the same numbers; given the
    arrays themselves, Keras would run them through its training pipeline and
    make two iterators over it (on a digits MLP's test split, 65 ms against
    12 ms).
    """
    batches = validation_batches((x, y), EVALUATE_BATCH)
    if isinstance(batches, tuple):  # left to Keras: empty, or another backend
        return model.evaluate(x, y, batch_size=EVALUATE_BATCH, verbose=0, return_dict=True)
    return model.evaluate(batches, verbose=0, return_dict=True)
