"""Pretrained bases: keras.applications, ``.keras`` files, a recipe's ``pretrain`` stage.

The driver prepares the base once per run (:func:`prepare_base`): a provider
builds or loads it, it is saved in graftune's cache under a content hash, and
its cut points and input adapter are worked out before any trial starts, so an
incompatible base fails the run early. Each trial then loads it from the cache
with ``safe_mode=True`` (:func:`load_base`).

Cut points: ``frozen_layers = k`` freezes the base from its input up to its
k-th cut point, a layer boundary where a single tensor passes (so a residual
block is never split). Boundaries with no weighted layer between them are
merged, keeping the later one, so each cut point adds at least one layer with
weights to the frozen part.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.errors import (
    PLUGIN_FAULTS,
    BaseModelError,
    GraftuneError,
    did_you_mean,
    echoed,
    ellipsized,
    first_few,
    raised,
    unreadable,
)
from orchestrator.markers import hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import keras

    from orchestrator.data import TaskSpec
    from orchestrator.recipe import BaseSpec, DataSpec, PretrainSpec
    from orchestrator.registry import Registry

log = logging.getLogger(__name__)

CACHE_ENV = "GRAFTUNE_CACHE_DIR"

#: How images in [0, 1] become what each keras.applications family expects.
_APPLICATION_PREPROCESSING = {
    "resnet": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "nasnet": "tf",
    "densenet": "torch",
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def cache_dir() -> Path:
    """graftune's cache folder: ``$GRAFTUNE_CACHE_DIR`` or ``~/.cache/graftune``, absolute.

    Raises:
        OutputPathError: ``$GRAFTUNE_CACHE_DIR`` starts with ``~user`` of no user here.
    """
    from orchestrator.errors import OutputPathError
    from orchestrator.paths import expand_user

    root = os.environ.get(CACHE_ENV) or "~/.cache/graftune"
    try:
        return expand_user(root).absolute()
    except ValueError as exc:
        raise OutputPathError(f"${CACHE_ENV}={exc}") from None


def pin_cache_dir() -> None:
    """Make a relative or ``~`` ``$GRAFTUNE_CACHE_DIR`` absolute, from this folder.

    Trials run in a working folder of their own, where a relative one named
    another folder (every transfer trial failed: its base was not there).
    Called by a run before Ray starts, whose workers inherit the environment.
    """
    if os.environ.get(CACHE_ENV):
        os.environ[CACHE_ENV] = str(cache_dir())


def lock_at_once(handle: Any, tries: int) -> None:
    """Lock ``handle`` exclusively for this process, or raise :class:`BlockingIOError`:
    tried ``tries`` times, 50 ms apart, past a reader that holds the lock shared for
    an instant to see whether it is held."""
    import fcntl

    for attempt in range(tries):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def locked(path: Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) across processes.

    Guards one cache entry while it is made, so that concurrent runs or trials
    that need it make it once, and what a killed process left half-written in
    it can be removed.

    Args:
        waiting: Called once, before blocking, when another process holds the
            lock (to tell a user why nothing seems to happen).
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            # A few tries: `cache info` holds it shared for an instant to see whether
            # an entry is being made, and a run said it waited for another (found by QA).
            lock_at_once(handle, tries=5)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: Held shared by every run on this machine for its whole length, and
#: exclusively by ``graftune cache clear``: entries a run is using stay.
IN_USE_LOCK = "in-use.lock"


@contextlib.contextmanager
def using_cache(waiting: Callable[[Path], None] | None = None) -> Iterator[None]:
    """Hold the cache for a run: ``graftune cache clear`` refuses until it ends.

    A run's trials load its base and features from the cache whenever they
    start; a clear in between failed every one of them. The lock is held in a
    cache this process cannot write too (another user's, a read-only one), where
    another may clear it; where its lock file cannot even be made, nothing is held.

    Args:
        waiting: Called with the cache folder, before blocking, while a clear
            holds it (found by QA: the run waited without a word).
    """
    import fcntl

    root = cache_dir()
    made = not root.exists()
    try:
        try:
            handle = lock_in_use(root, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(root)
            handle = lock_in_use(root, fcntl.LOCK_SH)  # waits out the clear
    except OSError:
        yield
        return
    with handle:
        try:
            yield
        finally:
            if made:
                _unmake_if_unused(root, handle)


def lock_in_use(root: Path, how: int) -> Any:
    """The cache's :data:`IN_USE_LOCK`, opened and locked ``how`` (``fcntl.flock``).

    A lock on a file that a finishing run has just removed (see
    :func:`_unmake_if_unused`) would hold nothing: such a file is let go and
    the lock taken again on the file now in the folder.

    Raises:
        OSError: The folder or its lock cannot be made or opened
            (``BlockingIOError`` for ``LOCK_NB`` when it is held).
    """
    import fcntl

    while True:
        root.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(root / IN_USE_LOCK, "a")  # noqa: SIM115 (the caller's to close)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            # Another user's cache (or a read-only one): flock asks no write, so its lock
            # is taken on the file opened to read (found by QA: one user's clear removed
            # what the other's run was using, which held no lock).
            handle = open(root / IN_USE_LOCK)  # noqa: SIM115
        try:
            fcntl.flock(handle, how)
            if os.stat(root / IN_USE_LOCK).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        except BaseException:
            handle.close()
            raise
        handle.close()


def _unmake_if_unused(root: Path, handle: Any) -> None:
    """Remove the cache folder a run made and put nothing in (a refused recipe).

    A recipe refused at its data or base wrote nothing else, and left an empty
    cache behind: its in-use lock, and an entry's lock in ``bases/`` for a base
    it could not make (imagenet weights offline). The folder goes only if no
    other run holds it (the in-use lock is taken exclusively, without waiting:
    entry locks are taken only by runs holding it) and only locks are in it.
    """
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another run is using the cache
    with contextlib.suppress(OSError):
        inside = sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)
        if any(p.is_file() and p.suffix != ".lock" for p in inside):
            return
        for path in inside:  # the deepest first: each folder is empty when it goes
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
        root.rmdir()


def keras_models_dir() -> Path:
    """Where Keras looks for downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``.

    Keras reads ``KERAS_HOME`` once, when it is imported, and ``get_file`` falls
    back to ``/tmp/.keras`` when that folder is not writable; the folder is
    taken from Keras itself where possible, so a message names the place Keras
    will actually look.
    """
    try:
        from keras.src.backend.config import keras_home

        home = str(keras_home())
    except (ImportError, AttributeError):
        home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "models"


# -- what a prepared base is ------------------------------------------------------

#: Below this largest per-feature standard deviation over training examples, a
#: base's output is taken as constant: every head built on it stays at chance.
#: A head's first layer starts with weights of about 0.1 over a few hundred
#: features, and Adam moves each by about the learning rate (1e-4 to 1e-2) a
#: step, so differences this small never become logits that differ; a trained
#: base's features vary by 0.1 to 10, a random ResNet50's (weights: none) by
#: about 1, and a random MobileNetV3Small's or EfficientNetB0's, whose
#: BatchNormalization keeps an untrained network's statistics, by 1e-12 to 1e-8.
FLAT_OUTPUT_STD = 1e-4
#: How many training examples :func:`output_spread` runs through the base, and
#: how many at a time (a ResNet50 at 224x224 held 5 GB more for 32 at once).
SPREAD_SAMPLE = 16
SPREAD_BATCH = 4


@dataclass(frozen=True)
class BaseInfo:
    """A prepared base's summary, cheap to pickle to every trial.

    Attributes:
        path: The ``.keras`` file in the cache that trials load.
        fingerprint: A hash of the base's weights and architecture.
        input_shape: The base's input shape (``None`` for a free dimension).
        output_shape: The base's output shape without the batch dimension.
        cut_points: Indices into ``model.layers`` after which one tensor passes.
        cut_names: The names of those layers, for humans.
        adapter: Steps that turn the data's input into the base's input.
        description: One line: where the base came from.
        cut_params: The base's parameters up to and including each cut point.
        random_layers: ``(index in model.layers, name)`` of each layer whose
            output is random in training even where it is frozen (augmentation;
            not dropout or noise, see :func:`random_layers`); ``None`` when not
            worked out (then a trial looks at the model itself).
        output_spread: The largest absolute value and the largest per-feature
            standard deviation of the base's output over a few training
            examples, and how many (:func:`output_spread`); ``None`` when not
            measured.
    """

    path: Path
    fingerprint: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    cut_points: tuple[int, ...]
    cut_names: tuple[str, ...]
    adapter: tuple[tuple[Any, ...], ...] = ()
    description: str = ""
    cut_params: tuple[int, ...] = ()
    random_layers: tuple[tuple[int, str], ...] | None = None
    output_spread: tuple[float, float, int] | None = None

    @property
    def flat_output(self) -> bool:
        """Whether the base's output hardly varies between examples (see :data:`FLAT_OUTPUT_STD`)."""
        return self.output_spread is not None and self.output_spread[1] < FLAT_OUTPUT_STD

    @property
    def n_cut_points(self) -> int:
        """How many cut points there are: ``frozen_layers`` runs from 0 to this."""
        return len(self.cut_points)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        data = {f: getattr(self, f) for f in self.__dataclass_fields__}
        data["path"] = str(self.path)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BaseInfo:
        """The inverse of :meth:`to_json` (lists back to tuples)."""

        def tuples(value: Any) -> Any:
            return tuple(tuples(v) for v in value) if isinstance(value, list) else value

        known = {k: tuples(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        known["path"] = Path(data["path"])
        return cls(**known)


class LoadedBase:
    """A base in a trial: the model, its cut points and input adapter.

    The model is loaded from ``info.path`` (``safe_mode=True``) when first
    used: a trial that trains on features cached at the base's output never
    needs it.
    """

    def __init__(self, model: keras.Model | None, info: BaseInfo) -> None:
        self._model = model
        self.info = info
        self.meta: dict[str, Any] = {}
        #: Set by the trial when the base up to this cut point is served from the
        #: frozen-feature cache: strategies then build on the cached features.
        self.cached_cut: int | None = None
        self.feature_shape: tuple[int, ...] | None = None
        #: The inputs :meth:`inputs_and_features` returned for the cached features:
        #: a model fed those must take one of them, not an input of the same shape.
        self.cached_inputs: list[Any] = []
        #: The architecture of the model as loaded, before :attr:`model` took its
        #: penalties off (``None``: given, not loaded).
        self._saved_architecture: str | None = None

    @property
    def model(self) -> keras.Model:
        """The base's Keras model, a fresh copy of its pretrained weights."""
        if self._model is None:
            import keras

            try:
                self._model = keras.saving.load_model(self.info.path, safe_mode=True, compile=False)
            except Exception as exc:
                problem = damaged_base_file(self.info.path) if self.info.path.is_file() else None
                if problem is None:
                    raise
                raise ValueError(
                    f"the cached base {self.info.path.parent} cannot be read ({problem}); "
                    "the next run that needs it makes it again"
                ) from exc
            from orchestrator.models import clear_regularizers

            # The recipe's λ is the only penalty a trial trains with (README, "λ in
            # two forms"): none the base was saved with stays in the loss. Its
            # fingerprint is of the base as saved, penalties and all.
            self._saved_architecture = self._model.to_json()
            clear_regularizers(self._model)
        return self._model

    def saved_fingerprint(self) -> str:
        """The fingerprint (:func:`weights_digest`) of the base as its file holds it,
        with the penalties :attr:`model` leaves out (found by QA: a trial on cached
        features of a base saved with a regularizer could not be put together
        again, its base "made again since the run")."""
        model = self.model
        return weights_digest(model, self._saved_architecture)

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded (or was given)."""
        return self._model is not None

    def adapt(self, x: Any) -> Any:
        """Apply the input adapter to a symbolic tensor of the data's shape."""
        return apply_adapter(x, self.info.adapter)

    def cut_layer(self, frozen_layers: int) -> int:
        """The index in ``model.layers`` of cut point ``frozen_layers`` (1-based)."""
        n = self.info.n_cut_points
        if not 1 <= frozen_layers <= n:
            raise ValueError(f"cut point must be in [1, {n}], got {frozen_layers}")
        return self.info.cut_points[frozen_layers - 1]

    def prefix_model(self, input_shape: tuple[int, ...], frozen_layers: int) -> keras.Model:
        """The data's input through the adapter and the base up to a cut point."""
        import keras

        index = self.cut_layer(frozen_layers)
        if index == len(self.model.layers) - 1:
            lower = self.model
        else:
            lower = keras.Model(_graph(self.model).inputs, _layer_output(self.model, index))
        inputs = keras.Input(input_shape, name="inputs")
        return keras.Model(inputs, lower(self.adapt(inputs), training=False), name="frozen_prefix")

    def upper_model(self, frozen_layers: int) -> keras.Model | None:
        """The base above a cut point, taking the cut's tensor; ``None`` at the base's output."""
        import keras

        index = self.cut_layer(frozen_layers)
        if index == len(self.model.layers) - 1:
            return None
        return keras.Model(
            _layer_output(self.model, index),
            _graph(self.model).outputs[0],
            name="base_above_cut",
        )

    def stochastic_prefix_layers(self, frozen_layers: int) -> list[str]:
        """Layers up to a cut point whose output is random in training (augmentation).

        Keras 3 runs nested layers in training mode during ``fit``, so such a
        layer makes the frozen prefix no pure function of its input. Dropout and
        noise are not among them: where frozen they run as in inference
        (:meth:`freeze`).
        """
        index = self.cut_layer(frozen_layers)
        known = self.info.random_layers
        if known is None:
            known = tuple(random_layers(self.model))
        return [name for at, name in known if at <= index]

    def inputs_and_features(self, task: TaskSpec, frozen_layers: int) -> tuple[Any, Any]:
        """Freeze to ``frozen_layers`` and return the trainable model's input and the base's features.

        Normally the input has the data's shape and runs through the adapter and
        the whole base. When the trial serves this cut from the feature cache,
        the input takes the cached features and runs through the base above the
        cut only. Either way, build the head on the returned features.
        """
        import keras

        if self.cached_cut is not None:
            if self.cached_cut != frozen_layers:
                raise ValueError(
                    f"the features are cached at cut point {self.cached_cut}, not {frozen_layers}"
                )
            assert self.feature_shape is not None
            inputs = keras.Input(self.feature_shape, name="cached_features")
            self.cached_inputs.append(inputs)
            if frozen_layers == self.info.n_cut_points:
                # The whole base is cached: the trial never loads it.
                return inputs, inputs
            self.freeze(frozen_layers)
            upper = self.upper_model(frozen_layers)
            assert upper is not None
            return inputs, upper(inputs, training=False)
        self.freeze(frozen_layers)
        inputs = keras.Input(task.input_shape, name="inputs")
        return inputs, self.model(self.adapt(inputs), training=False)

    def freeze(self, frozen_layers: int) -> int:
        """Freeze the base up to its ``frozen_layers``-th cut point, unfreeze the rest.

        BatchNormalization layers stay frozen everywhere, so that they run in
        inference mode on their pretrained statistics also where the base is
        unfrozen: Keras 3 passes ``fit``'s ``training=True`` to every nested
        layer, over a ``training=False`` given when the model was built, and only
        a non-trainable BatchNormalization layer keeps to its moving statistics.
        For the same reason the dropout and noise layers of the frozen part
        (EfficientNet's stochastic depth) are held in inference mode
        (:func:`_hold_in_inference`): a frozen base is a fixed function of its
        input, as its cached features are, and as Keras' transfer-learning
        guide means by ``base(x, training=False)``. Above the cut they train as
        they were built to.

        Returns:
            The number of layers (of ``model.layers``) now frozen.

        Raises:
            ValueError: If ``frozen_layers`` is outside ``[0, n_cut_points]``.
        """
        import keras

        n = self.info.n_cut_points
        if not 0 <= frozen_layers <= n:
            raise ValueError(f"frozen_layers must be in [0, {n}], got {frozen_layers}")
        last = self.info.cut_points[frozen_layers - 1] if frozen_layers else -1
        regularizing = _regularizing_layers()
        self.model.trainable = True
        for index, layer in enumerate(self.model.layers):
            layer.trainable = index > last
            for inner in [layer, *nested_layers(layer)]:
                if isinstance(inner, regularizing):
                    _hold_in_inference(inner, index <= last)
        for layer in nested_layers(self.model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        return last + 1


def _regularizing_layers() -> tuple[type, ...]:
    """The layers random in training only to regularise what trains (dropout, noise)."""
    import keras

    return (
        keras.layers.Dropout,
        keras.layers.SpatialDropout1D,
        keras.layers.SpatialDropout2D,
        keras.layers.SpatialDropout3D,
        keras.layers.GaussianNoise,
        keras.layers.GaussianDropout,
        keras.layers.AlphaDropout,
    )


#: The instance attribute :func:`_hold_in_inference` puts a layer's ``call`` in.
_HELD = "_graftune_training_call"


def _hold_in_inference(layer: Any, hold: bool) -> None:
    """Make ``layer`` run as in inference whatever ``training`` it is called with
    (``hold``), or as its class does again.

    Its ``call`` is shadowed on the instance, not changed in its config: the
    layer is saved as it was built, and a model loaded from the file trains it as
    its class does.
    """
    held = _HELD in vars(layer)
    if hold and not held:
        own = layer.call

        def call(*args: Any, training: Any = None, **kwargs: Any) -> Any:
            return own(*args, training=False, **kwargs)

        object.__setattr__(layer, _HELD, own)
        object.__setattr__(layer, "call", call)
    elif not hold and held:
        object.__delattr__(layer, "call")
        object.__delattr__(layer, _HELD)


def random_layers(model: keras.Model) -> list[tuple[int, str]]:
    """``(index in model.layers, name)`` of each layer (or nested layer) random in
    training even where the base is frozen: augmentation and any other layer with a
    random seed of its own, but not dropout and noise, which a frozen part runs as
    in inference (:meth:`LoadedBase.freeze`)."""
    import keras

    regularizing = _regularizing_layers()
    found = []
    for index, layer in enumerate(model.layers):
        for inner in [layer, *nested_layers(layer)]:
            if isinstance(inner, regularizing):
                continue
            if any(isinstance(value, keras.random.SeedGenerator) for value in vars(inner).values()):
                found.append((index, inner.name))
    return found


def nested_layers(model: Any) -> list[Any]:
    """Every layer of a model, including those of models nested in it."""
    found = []
    for layer in getattr(model, "layers", ()):
        found.append(layer)
        found += nested_layers(layer)
    return found


# -- providers ---------------------------------------------------------------------


class BaseProvider:
    """Base class of base providers (built-in and third-party).

    A provider turns a recipe's ``base:`` section into a Keras model whose
    output is the features transfer strategies build on.
    """

    #: The recipe key that selects it (``application``, ``path``, ``pretrain``),
    #: or the value of ``base: {provider: NAME}`` for a third-party one.
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Whether it reads ``base.options``; a recipe that gives options to a
    #: provider that reads none is refused, not run without them.
    takes_options: ClassVar[bool] = True

    def check(self, spec: BaseSpec) -> None:
        """Cheap checks for ``graftune validate``; raise :class:`BaseModelError`."""

    def absolute_options(self, options: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        """``base.options`` made independent of the recipe's folder.

        A run directory keeps the resolved recipe, from which a resume, ``predict``
        and ``export`` read it; a provider whose options hold relative paths
        overrides this so that copy still finds its files (found by QA: a resume
        looked for them in the run directory). The default returns ``options``
        unchanged.
        """
        return options

    def cache_key(self, spec: BaseSpec, context: BaseContext) -> str | None:
        """A key that identifies the model this spec gives, or ``None`` to hash the result."""
        return None

    def build(self, spec: BaseSpec, context: BaseContext) -> keras.Model:
        """Build or load the base model (in the driver, once per run)."""
        raise NotImplementedError

    def preprocessing(self, spec: BaseSpec) -> str | None:
        """How images in [0, 1] are scaled for this base (``caffe``, ``tf``, ``torch``, ``raw255``)."""
        return None


@dataclass(frozen=True)
class BaseContext:
    """What a provider may use to build a base."""

    seed: int
    base_dir: Path
    data_sources: Registry
    cache: Path
    #: Datasets prepared already, by :func:`data_key` (see :meth:`dataset`).
    prepared: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def dataset(self, spec: DataSpec) -> Any:
        """``spec``'s data, prepared as a run does (seeded split), once per context.

        A pretrain stage needs its data for its cache key and again to train; the
        run has prepared it already, to check that the base will take its data.
        """
        key = data_key(spec)
        if key not in self.prepared:
            from orchestrator.data import prepare_dataset

            self.prepared[key] = prepare_dataset(
                spec, self.data_sources, seed=self.seed, base_dir=self.base_dir
            )
        return self.prepared[key]


def data_key(spec: DataSpec) -> str:
    """What tells one data spec from another, for :attr:`BaseContext.prepared`."""
    return spec.model_dump_json()


#: The endings of the files ``Model.load_weights`` reads (it goes by the name alone).
WEIGHTS_SUFFIXES = (".h5", ".hdf5", ".keras", ".weights.json")


class ApplicationProvider(BaseProvider):
    """A model of ``keras.applications`` without its top, with imagenet, no or local weights."""

    name = "application"
    takes_options = False
    description = "keras.applications models (ResNet50, MobileNetV3Small, EfficientNetB0, ...)"

    def check(self, spec: BaseSpec) -> None:
        function = _application_function(spec.application or "")
        weights = spec.weights
        if weights not in (None, "imagenet", "none") and not Path(weights).is_file():
            # Found by QA: `None` (Keras' spelling) was taken for a file, and the file
            # kinds listed were not those read.
            word = str(weights).strip().lower()
            hint = f" (did you mean {word}?)" if word in ("none", "imagenet") else ""
            raise BaseModelError(
                f"weights file {weights} does not exist{hint}; give imagenet, none or a local "
                f"weights file ({', '.join(WEIGHTS_SUFFIXES)})",
                key="weights",
            )
        if weights not in (None, "imagenet", "none") and not weights.endswith(WEIGHTS_SUFFIXES):
            # Keras reads a weights file by its name's ending: another one failed in
            # every trial as weights that "do not fit" (found by QA).
            raise BaseModelError(
                f"weights file {weights} is no file Keras reads weights from: its name "
                f"must end in {', '.join(WEIGHTS_SUFFIXES)} (rename it if it is one)",
                key="weights",
            )
        if spec.input_shape:
            if len(spec.input_shape) != 3:
                # Keras' own words name a layer's ndim (found by QA: [32, 32]).
                raise BaseModelError(
                    f"expected [height, width, channels] for an application's images, "
                    f"such as [{spec.input_shape[0]}, {spec.input_shape[0]}, 3]; got "
                    f"{list(spec.input_shape)}",
                    key="input_shape",
                )
            _check_application_input(function, spec)
            shape = tuple(spec.input_shape)
            if (weights or "imagenet") == "imagenet" and len(shape) == 3 and shape[2] != 3:
                # Found by QA: MobileNetV3Small at 1 channel passed, then asked for a
                # download whose weights could never load (a tensor dump, cut short).
                raise BaseModelError(
                    f"{spec.application}'s imagenet weights are of RGB images, and "
                    f"base.input_shape has {shape[2]} channel(s): give [H, W, 3] (grey "
                    "images are repeated to RGB), or weights: none",
                    key="input_shape",
                )
            if len(shape) == 3:  # the scaling a family needs: refused now, not in every trial
                plan_adapter(shape, shape, self.preprocessing(spec))

    def cache_key(self, spec: BaseSpec, context: BaseContext) -> str:
        weights = spec.weights or "imagenet"
        if weights not in ("imagenet", "none"):
            weights = _file_digest(Path(weights))
        key = {
            "application": spec.application,
            "weights": weights,
            "input_shape": _input_shape(spec),
        }
        if weights == "none":  # random weights: the recipe's seed draws them
            key["seed"] = context.seed
            key.update(_drawn_by())
        return _digest(key)

    def build(self, spec: BaseSpec, context: BaseContext) -> keras.Model:
        import keras

        function = _application_function(spec.application or "")
        weights = spec.weights or "imagenet"
        local = weights not in ("imagenet", "none")
        if weights == "none":
            # The same seed, the same base: built again (after a cache clear, on
            # another machine), it is the one the run's trials trained on, to its
            # layers' names (a fresh session numbers them from the start; no garbage
            # collection, 0.3 s with TensorFlow loaded, needed for that).
            keras.backend.clear_session(free_memory=False)
        seeded = _seeded_weights(context.seed) if weights == "none" else contextlib.nullcontext()
        try:
            with (
                seeded,
                warnings.catch_warnings(),
                _refusing_wrong_weights_files(spec.application or ""),
            ):
                if local:  # a file of another model: a warning per layer before the error
                    warnings.simplefilter("ignore", UserWarning)
                _quiet_about_channels()
                with _resolution_said(spec.application or ""):
                    return function(
                        include_top=False,
                        weights=None if weights == "none" else weights,
                        input_shape=_input_shape(spec),
                    )
        except BaseModelError:
            raise
        except Exception as exc:
            if weights == "imagenet" and _looks_like_download_failure(exc):
                raise BaseModelError(
                    _offline_message(spec.application or "", exc), key="weights"
                ) from exc
            if local:
                # Keras lists every layer it could not load; its first example says why.
                why = " ".join(str(exc).split("\n\nList of objects")[0].split())
                raise BaseModelError(
                    f"the weights in {weights} do not fit {spec.application} without its top "
                    f"at input_shape {list(_input_shape(spec))}: {type(exc).__name__}: "
                    f"{why[:400]}. Give the file saved from this application (include_top=False)",
                    key="weights",
                ) from exc
            raise BaseModelError(
                f"cannot build {spec.application}: {type(exc).__name__}: {exc}", key="application"
            ) from exc

    def preprocessing(self, spec: BaseSpec) -> str:
        function = _application_function(spec.application or "")
        module = function.__module__.rsplit(".", 1)[-1]
        return _APPLICATION_PREPROCESSING.get(module, "raw255")


#: The first bytes of every HDF5 file.
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class PathProvider(BaseProvider):
    """A model saved as a ``.keras`` file, loaded with ``safe_mode=True``."""

    name = "path"
    takes_options = False
    description = "a saved .keras model file (loaded with safe_mode=True)"

    def check(self, spec: BaseSpec) -> None:
        path = Path(spec.path or "")
        if not path.is_file():
            raise BaseModelError(f"no model file at {path}", key="path")
        if path.suffix not in (".keras", ".h5"):
            raise BaseModelError(
                f"expected a .keras (or legacy .h5) file, got {path.name}", key="path"
            )
        # Keras itself says "File not found" for a file that is there but is no model.
        if path.suffix == ".keras" and not zipfile.is_zipfile(path):
            raise BaseModelError(
                f"{path} is not a .keras file: model.save() writes a zip archive, and this "
                "is none (another kind of file, or one cut short?)",
                key="path",
            )
        if path.suffix == ".h5":
            with open(path, "rb") as handle:
                if handle.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
                    raise BaseModelError(f"{path} is not an HDF5 (.h5) file", key="path")

    def cache_key(self, spec: BaseSpec, context: BaseContext) -> str:
        return _digest({"path": _file_digest(Path(spec.path or ""))})

    def build(self, spec: BaseSpec, context: BaseContext) -> keras.Model:
        import keras

        self.check(spec)
        try:
            return keras.saving.load_model(spec.path, safe_mode=True, compile=False)
        except Exception as exc:
            raise BaseModelError(
                f"cannot load {spec.path} with safe_mode=True: {load_problem(exc)}", key="path"
            ) from exc


def unknown_keras_object(exc: BaseException) -> str | None:
    """The custom class or function Keras could not find to load a model, if that
    is why it failed."""
    import re

    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", str(exc))
    return unknown.group(1) if unknown else None


def saved_as(exc: BaseException) -> str | None:
    """The name the model file saved the unknown object under (``pkg>Scale``,
    with the package that registered it), where Keras' message quotes it."""
    import re

    _, found, config = str(exc).partition("Full object config:")
    # The object's own registered_name follows its config (whose layers' own come first).
    names = re.findall(r"'registered_name': '([^']+)'", config) if found else []
    return names[-1] if names else None


def load_problem(exc: BaseException) -> str:
    """Why Keras could not load a model file, in a line a graftune user can act on.

    Keras' own message for a custom class is a kilobyte of the model's config,
    and for a ``Lambda`` layer it suggests ``safe_mode=False``, which graftune
    never uses.
    """
    text = str(exc)
    unknown = unknown_keras_object(exc)
    if unknown:
        from orchestrator.plugin_manager import autoload_disabled

        off = autoload_disabled()
        saved = saved_as(exc)
        # Found by QA: the package a plugin registered the object under went unsaid.
        named = f"{unknown!r} (saved as {saved!r})" if saved and saved != unknown else repr(unknown)
        return (
            f"it uses the custom Keras object {named}, which no imported code "
            "has registered: pass the module that registers it "
            "(keras.saving.register_keras_serializable) with --plugin, or have an installed "
            "graftune plugin return it from its graftune_keras_objects hook"
            # Found by QA: the plugin was installed, and autoload was off, unsaid.
            + (f" ({off}: installed plugins are not loaded)" if off else "")
        )
    if "`Lambda` layer" in text and "safe_mode" in text:
        return (
            "it holds a Lambda layer of Python code, which safe_mode=True does not run (graftune "
            "loads every model so): use a registered custom layer in its place (a model "
            "graftune trains holds none unless its base or a plugin put one in)"
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    if len(first) > 300:
        first = first[:300].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {first}"


def default_architecture(input_shape: Sequence[int]) -> str:
    """A ``pretrain:`` base's architecture where the recipe names none: a CNN for
    images ``(h, w, c)``, an MLP for anything else."""
    return "cnn" if len(input_shape) == 3 else "mlp"


class PretrainProvider(BaseProvider):
    """A small network trained inside the run on another data source, cached by content."""

    name = "pretrain"
    takes_options = False
    description = "a small CNN or MLP pretrained in the run on any data source (cached)"

    def cache_key(self, spec: BaseSpec, context: BaseContext) -> str:
        import keras

        pretrain = spec.pretrain
        assert pretrain is not None
        data = context.dataset(pretrain.data)
        settings = pretrain.model_dump(mode="json", exclude={"data"})
        if settings["architecture"] == default_architecture(data.task.input_shape):
            # Written or left out, one base (found by QA: `architecture: cnn` on images
            # pretrained it again); as left out, the key of bases already cached.
            settings["architecture"] = None
        return _digest(
            {
                "pretrain": settings,
                "data": data.task.fingerprint,
                "seed": context.seed,
                "keras": keras.__version__,
                "graftune": _graftune_version(),
                **_drawn_by(),
            }
        )

    def build(self, spec: BaseSpec, context: BaseContext) -> keras.Model:
        import keras

        from orchestrator.models import (
            evaluate_arrays,
            fit_arrays,
            forgetting_traced_gradients,
            steps_per_execution,
        )

        pretrain = spec.pretrain
        assert pretrain is not None
        data = context.dataset(pretrain.data)
        with _seeded_weights(context.seed):
            inputs, features, pooled = _pretrain_layers(pretrain, data.task)
            outputs = keras.layers.Dense(
                data.task.n_classes, activation="softmax", name="pretrain_head"
            )(pooled)
            model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.Adam(pretrain.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution(),
        )
        log.info(
            "pretraining a %s base on %s for %d epochs",
            pretrain.architecture or default_architecture(data.task.input_shape),
            pretrain.data.source,
            pretrain.epochs,
        )
        # The base is trained here once (trials load it from its file): what its
        # training registered must not keep the model in the driver's memory.
        with forgetting_traced_gradients():
            fit_arrays(
                model,
                data.x_train,
                data.y_train,
                (data.x_val, data.y_val),
                epochs=pretrain.epochs,
                batch_size=pretrain.batch_size,
                callbacks=[_stops_when_interrupted()],
            )
        accuracy = evaluate_arrays(model, data.x_test, data.y_test)["accuracy"]
        log.info("pretrained base: test accuracy %.3f on %s", accuracy, pretrain.data.source)
        base = keras.Model(inputs, features, name="pretrained_base")
        # Said by prepare_base, and kept in the cache entry's description (found by QA:
        # a pretrain that diverged was cached and used, its accuracy said nowhere).
        base._graftune_pretrained = (float(accuracy), data.task.n_classes, pretrain.data.source)
        return base


def _pretrain_layers(
    pretrain: PretrainSpec, task: TaskSpec, *, initializer: str | None = None
) -> tuple[Any, Any, Any]:
    """A ``pretrain:`` base's layers on ``task``'s inputs, untrained: its input, its
    features (the base's output) and their pooling (what its head sits on).

    ``initializer``: every kernel's initialiser (``"zeros"`` draws no random
    number: a model built only to be measured leaves every later draw as it was).
    """
    import keras

    from orchestrator.models import safe_variance

    kernel = {} if initializer is None else {"kernel_initializer": initializer}
    shape = task.input_shape
    architecture = pretrain.architecture or default_architecture(shape)
    inputs = keras.Input(shape, name="pretrain_input")
    width = pretrain.width
    if architecture == "cnn":
        if len(shape) != 3:
            raise BaseModelError(
                f"a cnn base needs images (h, w, c); the pretrain data is {shape}",
                key="pretrain",
            )
        x = inputs
        for block, filters in enumerate((width, width * 2)):
            for conv in range(2):
                x = keras.layers.Conv2D(
                    filters,
                    3,
                    padding="same",
                    use_bias=False,
                    name=f"block{block + 1}_conv{conv + 1}",
                    **kernel,
                )(x)
                x = keras.layers.BatchNormalization(
                    # A short pretraining must still leave usable moving statistics:
                    # transfer strategies run these layers in inference mode.
                    momentum=0.9,
                    name=f"block{block + 1}_bn{conv + 1}",
                )(x)
                x = keras.layers.Activation("relu", name=f"block{block + 1}_relu{conv + 1}")(x)
            if block == 0 and min(shape[0], shape[1]) >= 4:
                x = keras.layers.MaxPooling2D(2, name="block1_pool")(x)
        return inputs, x, keras.layers.GlobalAveragePooling2D(name="pretrain_pool")(x)
    x = keras.layers.Flatten(name="flatten")(inputs) if len(shape) > 1 else inputs
    x = keras.layers.Normalization(
        mean=task.feature_mean.reshape(-1),
        # A feature constant in training must not be divided by ~0 later.
        variance=safe_variance(task.feature_var.reshape(-1)),
        name="normalize",
    )(x)
    for i in range(2):
        x = keras.layers.Dense(width * 2, activation="relu", name=f"dense{i + 1}", **kernel)(x)
    return inputs, x, x


def pretrain_cut_points(pretrain: PretrainSpec, task: TaskSpec) -> int:
    """How many cut points the ``pretrain:`` base of ``pretrain`` on ``task``'s
    inputs (the pretrain data's) will have, known before it is trained: a
    ``frozen_layers`` past them is refused before minutes of pretraining.

    Raises:
        BaseModelError: The architecture does not fit the pretrain data.
    """
    import keras

    # Counted on the narrowest copy: its width does not change the graph's cut
    # points (found by QA: a width of 10^20 ended validate --data in an internal
    # error, where the run's pretraining refuses it at its key; width 1500 took
    # 0.6 GB more to count).
    narrow = pretrain.model_copy(update={"width": 1})
    inputs, features, _ = _pretrain_layers(narrow, task, initializer="zeros")
    return len(find_cut_points(keras.Model(inputs, features, name="pretrained_base")))


def _say_pretrained(
    model: Any, echo: Callable[[str], None] | None, warn: Callable[[str], None]
) -> None:
    """How well a ``pretrain:`` stage learned its data; a warning where it learned
    nothing (its test accuracy within half again of chance, or not a number)."""
    said = getattr(model, "_graftune_pretrained", None)
    if said is None:
        return
    accuracy, n_classes, source = said
    if echo is not None:
        echo(f"base: pretrained to test accuracy {accuracy:.3f} on {source} ({n_classes} classes)")
    if not math.isfinite(accuracy) or accuracy <= 1.5 / n_classes:
        warn(
            f"the pretrain stage learned next to nothing of {source} (test accuracy "
            f"{accuracy:.3f}, chance {1 / n_classes:.3f}: a learning rate too high, or too "
            "few epochs?), and the base is kept in graftune's cache for every run with these "
            "settings: change base.pretrain, or free it with graftune cache clear --bases"
        )


def _stops_when_interrupted() -> Any:
    """A callback that ends a pretrain stage at the epoch after a Ctrl+C or SIGTERM
    whose KeyboardInterrupt Python dropped (see ``ray_start.raise_if_interrupted``)."""
    import keras

    from orchestrator.tuning.ray_start import raise_if_interrupted

    class StopsWhenInterrupted(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            raise_if_interrupted()

    return StopsWhenInterrupted()


#: The built-in providers: seeded, or keyed by their file's digest, each builds the
#: same base again under one cache key (a plugin's need not).
BUILT_IN_PROVIDERS = (ApplicationProvider, PathProvider, PretrainProvider)


@hookimpl
def graftune_register_bases(registry: Registry) -> None:
    for provider in BUILT_IN_PROVIDERS:
        registry.add(provider)


# -- preparing in the driver, loading in a trial -------------------------------------


#: What :meth:`BaseProvider.preprocessing` may return.
PREPROCESSING_MODES = (None, "caffe", "tf", "torch", "raw255")


def _calling(providers: Registry, kind: str, method: str, *args: Any) -> Any:
    """Call a provider's ``method``, so that any failure names the provider.

    A :class:`BaseModelError` (or another graftune error) goes through as it
    is; anything else is a provider's bug or a library's surprise, said as a
    ``BaseModelError`` naming the provider and its plugin, the cause chained.
    """
    try:
        return getattr(providers.get(kind)(), method)(*args)
    except GraftuneError:
        raise
    except PLUGIN_FAULTS as exc:
        raise BaseModelError(
            f"base provider {kind!r} from {providers.owner(kind)} failed in {method}(): "
            f"{raised(exc)}"
        ) from exc


def check_base_spec(spec: BaseSpec, providers: Registry) -> None:
    """Cheap checks of a ``base:`` section (no download, no training)."""
    if spec.options and spec.kind in providers and not providers.get(spec.kind).takes_options:
        got = ", ".join(repr(str(k)) for k in spec.options)
        if providers.is_builtin(spec.kind):
            why = "options are for a third-party base provider: base: {provider: NAME, options: {...}}"
        else:  # found by QA: told to use a third-party provider, which it is
            why = f"its provider, from {providers.owner(spec.kind)}, sets takes_options = False"
        raise BaseModelError(
            f"the {spec.kind!r} base takes no options, got {got} ({why})", key="options"
        )
    _calling(providers, spec.kind, "check", spec)


def prepare_base(
    spec: BaseSpec,
    providers: Registry,
    task: TaskSpec,
    *,
    seed: int,
    base_dir: Path,
    data_sources: Registry,
    echo: Callable[[str], None] | None = None,
    prepared: dict[str, Any] | None = None,
    sample: Any = None,
) -> BaseInfo:
    """Build or reuse the run's base, save it in the cache and work out its adapter.

    ``echo`` is told when the run waits for another process that is making the
    same base (a pretrain can take minutes). ``prepared``: datasets the caller
    has prepared already, by :func:`data_key` (a pretrain stage's). ``sample``:
    a few of the run's training inputs, to measure how the base's output varies
    (``BaseInfo.output_spread``).

    Raises:
        BaseModelError: The base cannot be had (offline imagenet weights, a bad
            file) or cannot take the data's input.
    """
    import keras

    context = BaseContext(
        seed=seed,
        base_dir=base_dir,
        data_sources=data_sources,
        cache=cache_dir(),
        prepared=dict(prepared or {}),
    )
    kind = spec.kind
    owner = None if spec.provider is None else f"{kind!r} from {providers.owner(kind)}"

    def build() -> Any:
        registered = dict(keras.saving.get_custom_objects())
        model = _calling(providers, kind, "build", spec, context)
        if not isinstance(model, keras.Model):
            raise BaseModelError(
                f"base provider {kind!r} from {providers.owner(kind)} returned "
                f"{type(model).__name__} from build(), not a keras.Model"
            )
        try:
            _check_one_input_and_output(model)
        except BaseModelError as exc:
            if spec.provider is None:  # a built-in's: the recipe's file or settings
                raise
            raise BaseModelError(
                f"base provider {kind!r} from {providers.owner(kind)} returned from "
                f"build() a model that is no base: {exc}"
            ) from None
        if spec.provider is not None:  # its preprocessing fits its model, before it is kept
            shape = tuple(model.input_shape[1:])
            plan_adapter(shape, shape, preprocessing, owner)
        if not providers.is_builtin(kind):
            # Every trial loads the base from the cache (safe_mode=True): a custom layer
            # no code registers failed every trial with Keras' kilobyte of config.
            from orchestrator.preflight import reload_problem

            problem = reload_problem(model, registered)
            if problem is not None:
                raise BaseModelError(
                    f"base provider {kind!r} from {providers.owner(kind)} built a model that "
                    f"would not load again, as each trial loads it from graftune's cache: "
                    f"{problem}"
                )
        return model

    # The cheap checks first: a cache key may read the files they check.
    _calling(providers, kind, "check", spec)
    preprocessing = _calling(providers, kind, "preprocessing", spec)
    if preprocessing not in PREPROCESSING_MODES:
        raise BaseModelError(
            f"base provider {kind!r} from {providers.owner(kind)} returned preprocessing "
            f"{preprocessing!r}; expected one of {', '.join(map(str, PREPROCESSING_MODES))}"
        )
    key = _calling(providers, kind, "cache_key", spec, context)
    if key is not None and not isinstance(key, str):
        raise BaseModelError(
            f"base provider {kind!r} from {providers.owner(kind)} returned "
            f"{type(key).__name__} {echoed(key, 60)} from cache_key(); expected a text or None"
        )

    def warn(message: str) -> None:
        if echo is not None:
            echo(f"warning: {message}")
        else:
            log.warning("%s", message)

    def damaged(folder: Path, problem: str) -> None:
        warn(f"the cached base {folder} cannot be read ({problem}): making it again")

    if key:
        # Held while the base is built: runs that need the same base (a pretrain
        # takes a while) build it once, and the others load it.
        folder = cache_dir() / "bases" / f"{spec.kind}-{_entry_name(key)}"
        model_path = folder / "base.keras"
        lock = folder.with_suffix(".lock")

        def waiting() -> None:
            if echo is not None:
                echo(f"base: waiting for another graftune process that is making it ({lock})")

        # A whole entry is read without its lock (a shared cache may be read-only);
        # a damaged one is made again as a missing one is. Trials that loaded it
        # meanwhile keep theirs: the file is replaced, not written over.
        cached = _cached_base(model_path, lambda problem: damaged(folder, problem))
        if cached is not None and echo is not None:
            # Found by QA: a base loaded from the cache was said as one made ("preparing").
            echo(f"base: made before, loaded from graftune's cache ({folder})")
        if cached is None:
            with locked(lock, waiting):
                cached = _cached_base(model_path)  # made, or made again, while this one waited
                if cached is None:
                    model = build()
                    _say_pretrained(model, echo, warn)
                    cached = model, weights_digest(model)
                    _save_base(model, model_path)
                    _describe_entry(
                        folder, spec, model, providers.owner(kind), seed, context, cached[1]
                    )
        model, fingerprint = cached
    else:  # known by its weights only once built
        model = build()
        fingerprint = weights_digest(model)
        folder = cache_dir() / "bases" / f"{spec.kind}-{fingerprint[:16]}"
        model_path = folder / "base.keras"
        problem = damaged_base_file(model_path) if model_path.is_file() else None
        if problem is not None:
            damaged(folder, problem)
        if problem is not None or not model_path.is_file():
            with locked(folder.with_suffix(".lock")):
                if not model_path.is_file() or damaged_base_file(model_path) is not None:
                    _save_base(model, model_path)
                    _describe_entry(
                        folder, spec, model, providers.owner(kind), seed, context, fingerprint
                    )
    input_shape = tuple(model.input_shape[1:])
    output_shape = tuple(model.output_shape[1:])
    cuts = find_cut_points(model)
    adapter = plan_adapter(task.input_shape, input_shape, preprocessing, owner)
    probe = _probe(model, tuple(task.input_shape), adapter, key="path" if spec.path else None)
    top = classifier_top(model)
    if top is not None:
        warn(
            f"the base ends in its classifier ({top}): its output is the probabilities of "
            "the classes it was trained on, and every head, and feature_extraction's whole "
            "base, sits on them. Save it without that layer, e.g. keras.Model(model.input, "
            "model.layers[-2].output).save(...), as keras.applications' include_top=False does"
        )
    description = spec.application or (str(spec.path) if spec.path else spec.kind)
    return BaseInfo(
        path=model_path,
        fingerprint=fingerprint,
        input_shape=input_shape,
        output_shape=output_shape,
        cut_points=tuple(cuts),
        cut_names=tuple(model.layers[i].name for i in cuts),
        adapter=tuple(adapter),
        description=description,
        cut_params=tuple(_params(model.layers[: i + 1]) for i in cuts),
        random_layers=tuple(random_layers(model)),
        output_spread=None if sample is None else _spread(probe, sample),
    )


def check_base_file(spec: BaseSpec, task: TaskSpec) -> int:
    """For ``validate --data``: load a ``base.path`` model as a run does
    (``safe_mode=True``; nothing trained, nothing cached) and refuse what the run
    would refuse at once: a file Keras cannot load so, not one input to one
    output, inputs the data cannot be adapted to or that its layers shrink to
    nothing (found by QA: validate --data said ok to each, and the run refused it).

    Returns:
        Its number of cut points (what ``frozen_layers`` counts).

    Raises:
        BaseModelError: Why, with the ``base:`` key at fault.
    """
    import keras

    provider = PathProvider()
    model = provider.build(spec, None)  # type: ignore[arg-type]  # (it reads no context)
    try:
        _check_one_input_and_output(model)
        data_shape = tuple(task.input_shape)
        adapter = plan_adapter(
            data_shape, tuple(model.input_shape[1:]), provider.preprocessing(spec), None
        )
        _probe(model, data_shape, adapter, key="path")
        return len(find_cut_points(model))
    finally:
        del model
        keras.backend.clear_session(free_memory=False)


def application_cut_points(spec: BaseSpec) -> int:
    """For ``validate --data``: how many cut points ``spec``'s ``keras.applications``
    model has, counted on its architecture built without weights (nothing read,
    nothing downloaded, nothing cached): the imagenet model's are the same.

    Raises:
        BaseModelError: It cannot be built at the recipe's ``input_shape``.
    """
    import keras

    function = _application_function(spec.application or "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # said, where they are said, by the run's build
            model = function(include_top=False, weights=None, input_shape=_input_shape(spec))
    except (ValueError, TypeError) as exc:
        raise BaseModelError(
            f"cannot build {spec.application}: {keras_reason(exc)}", key="application"
        ) from exc
    try:
        return len(find_cut_points(model))
    finally:
        del model
        keras.backend.clear_session(free_memory=False)


def _probe(
    model: keras.Model, data_shape: tuple[int, ...], adapter: list, *, key: str | None
) -> keras.Model:
    """``model`` behind ``adapter``, on the data's inputs, in inference mode; a base
    that cannot be called on them is refused, naming why.

    A base that takes any image size (``Input((None, None, 3))``) accepts the
    data's shape, and then its convolutions and poolings can shrink small images
    to nothing: Keras' error, several lines of its own, came out as an internal one.
    """
    import keras

    try:
        inputs = keras.Input(data_shape)
        return keras.Model(inputs, model(apply_adapter(inputs, tuple(adapter)), training=False))
    except (ValueError, TypeError) as exc:
        size = "; larger images (data.image_size) may fit it" if len(data_shape) == 3 else ""
        raise BaseModelError(
            f"the base cannot take the data's inputs of shape {data_shape}: "
            f"{keras_reason(exc).rstrip('.')}{size}",
            key=key,
        ) from exc


def classifier_top(model: keras.Model) -> str | None:
    """``"layer 'NAME' (softmax)"`` where ``model`` ends in a softmax or sigmoid layer,
    a classifier's output, else ``None``. A model that ends in a model nested in it
    (a classifier wrapped, ``Sequential([inner])``) ends where that one does:
    ``'inner/NAME'``."""
    import keras

    last = model.layers[-1] if model.layers else None
    path = []
    while isinstance(last, keras.Model) and last.layers:
        path.append(last.name)
        last = last.layers[-1]
    if last is None:
        return None
    named = "/".join([*path, last.name])
    if isinstance(last, keras.layers.Softmax):
        return f"layer {named!r} (softmax)"
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", None)
    if isinstance(last, (keras.layers.Dense, keras.layers.Activation)) and name in (
        "softmax",
        "sigmoid",
    ):
        return f"layer {named!r} ({name})"
    return None


def keras_reason(exc: BaseException) -> str:
    """The line of a Keras layer's error that says what is wrong, without the frame
    Keras puts around it ("Exception encountered when calling ...", its arguments)
    and without its terminal colours."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    for line in lines:
        if line and not line.startswith(("Exception encountered", "Arguments received", "•")):
            return line
    return f"{type(exc).__name__}: {exc}"


def output_spread(model: keras.Model, adapter: Any, sample: Any) -> tuple[float, float, int] | None:
    """The largest ``|value|`` and per-feature standard deviation of a base's output,
    and over how many examples.

    Over the first :data:`SPREAD_SAMPLE` of ``sample`` (the data's inputs, run
    through ``adapter``), :data:`SPREAD_BATCH` at a time, in inference mode as
    strategies run the frozen base. ``None`` where the inputs themselves do not
    vary (fewer than two, or all alike): nothing can be said of the base then.
    """
    import numpy as np

    shape = tuple(np.shape(sample)[1:])
    return _spread(_probe(model, shape, list(adapter), key=None), sample)


def _spread(probe: keras.Model, sample: Any) -> tuple[float, float, int] | None:
    """:func:`output_spread` through a :func:`_probe` made already."""
    import keras
    import numpy as np

    x = np.asarray(sample[:SPREAD_SAMPLE], dtype="float32")
    if len(x) < 2 or not np.ptp(x.reshape(len(x), -1), axis=0).any():
        return None
    parts = [
        keras.ops.convert_to_numpy(probe(x[i : i + SPREAD_BATCH], training=False))
        for i in range(0, len(x), SPREAD_BATCH)
    ]
    out = np.concatenate(parts).reshape(len(x), -1).astype("float64")
    return float(np.abs(out).max()), float(out.std(axis=0).max()), len(x)


def flat_output_warning(info: BaseInfo, spec: BaseSpec | None) -> str | None:
    """What to tell a user whose base's output hardly varies (``info.flat_output``), or ``None``."""
    if not info.flat_output:
        return None
    assert info.output_spread is not None
    largest, spread, count = info.output_spread
    said = (
        f"the base's output hardly varies over {count} training examples (largest "
        f"|value| {largest:.2g}, largest per-feature standard deviation {spread:.2g}, below "
        f"{FLAT_OUTPUT_STD:g}): its trials will score at chance. "
    )
    if spec is not None and spec.application is not None and spec.weights == "none":
        return said + (
            f"A base with weights: none ({spec.application}) has the BatchNormalization "
            "statistics of an untrained network (mean 0, variance 1), which graftune keeps "
            "frozen, and the signal dies out through its layers: use weights: imagenet, a "
            "pretrained .keras file (base.path) or a pretrain: stage"
        )
    return said + (
        "Its layers scale the signal down to nothing (BatchNormalization statistics that were "
        "never trained? graftune keeps them frozen): use a pretrained base"
    )


def flat_output_note(info: BaseInfo) -> str:
    """The leaderboard note of a trial on a base whose output hardly varies."""
    assert info.output_spread is not None
    return (
        f"base output near constant (std {info.output_spread[1]:.2g} < {FLAT_OUTPUT_STD:g}): "
        "at chance, see the run's warning"
    )


def _check_one_input_and_output(model: Any) -> None:
    """A base is one input to one output, and built (its input shape known).

    Raises:
        BaseModelError: An unbuilt model (a Sequential saved without an Input),
            or several inputs or outputs: a strategy trains on one tensor of
            features, and the cut points are of one path from input to output.
    """
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = []
    if not inputs or not outputs:
        raise BaseModelError(
            "the base model has no defined input (a Sequential without a keras.Input, saved "
            "or returned before it was built, or a subclassed keras.Model): give it a "
            "keras.Input (a functional model, or a Sequential that starts with one)"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        # With several inputs, an output that uses them all cannot be cut from one
        # (found by QA: the advice given then failed, "not connected to inputs").
        make = (
            "keras.Model(model.inputs[0], model.outputs[i])"
            if len(inputs) == 1
            else "keras.Model(model.inputs[i], model.get_layer(NAME).output), NAME a layer "
            "that depends on that input alone"
        )
        raise BaseModelError(
            f"the base model has {len(inputs)} input(s) and {len(outputs)} output(s); a base "
            f"takes one input and gives one output (make one: {make})"
        )
    shape = tuple(outputs[0].shape)
    if len(shape) < 2 or 0 in shape[1:]:
        raise BaseModelError(
            f"the base model's output has shape {shape}: no features an example; a base "
            "gives features to build on, (None, n) or (None, height, width, channels)"
        )


def _cached_base(
    path: Path, damaged: Callable[[str], None] | None = None
) -> tuple[Any, str] | None:
    """The base cached at ``path`` and its :func:`weights_digest` (computed once, to
    check it against the entry's), or ``None`` where there is none or it cannot be read.

    Args:
        damaged: Told why, when the file is there but cannot be loaded (cut short,
            written over): the caller makes it again, as a missing one.
    """
    import keras

    if not path.is_file():
        return None
    problem = damaged_base_file(path)
    if problem is None:
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # whatever Keras or h5py says of a damaged archive
            problem = load_problem(exc)
        else:
            fingerprint = weights_digest(model)
            problem = _other_weights(path.parent, fingerprint)
            if problem is None:
                log.info("reusing cached base %s", path)
                return model, fingerprint
    if damaged is not None:
        damaged(problem)
    return None


def _other_weights(folder: Path, fingerprint: str) -> str | None:
    """Why a cached base's weights are not those it was cached with (found by QA: a
    base.keras written over with another model was used by every run), or ``None``
    (the same, or an entry of a graftune that did not record them)."""
    try:
        recorded = json.loads((folder / ENTRY_META).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(recorded, str) or recorded == fingerprint:
        return None
    return "its weights are not those it was cached with (written over?)"


def damaged_base_file(path: Path) -> str | None:
    """Why a cached ``base.keras`` is no whole ``.keras`` archive, or ``None``.

    Cheap (the archive's table of contents only): a file cut short has lost it.
    Keras itself says "File not found" of a file that is there but is no archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{path.name} is not a whole .keras file (cut short?): {exc}"
    if "config.json" not in names:
        return f"{path.name} is a zip archive but no .keras model (it has no config.json)"
    return None


def _save_base(model: Any, path: Path) -> None:
    """Save ``model`` at ``path`` in one move (the caller holds the entry's lock)."""
    from orchestrator.leaderboard import replacing

    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:  # also removes what a save killed midway left
        model.save(tmp)


#: Beside a cached ``base.keras``: what it is, for ``graftune cache info``.
ENTRY_META = "meta.json"


@contextlib.contextmanager
def _seeded_weights(seed: int) -> Iterator[None]:
    """``keras.utils.set_random_seed(seed)``, and, while the base's layers are made,
    a ``random.Random(seed)`` of Keras' own for the seeds it draws.

    Keras draws each initializer's seed (and its global seed generator's) from
    Python's ``random``, which embedded Ray's start, in another thread meanwhile,
    draws from too: on JAX, three runs of one recipe pretrained three bases (found
    by QA). Put back after, so the trials draw as they always have.
    """
    import random

    import keras

    keras.utils.set_random_seed(seed)
    try:
        from keras.src.random import seed_generator
    except ImportError:  # another Keras: seeded as set_random_seed leaves it
        yield
        return
    shared = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = shared


def _drawn_by() -> dict[str, str]:
    """The Keras backend, in the cache key of a base whose weights a seed draws: the
    same seed draws other weights on JAX than on TensorFlow (found by QA: a TensorFlow
    run trained on the base JAX had cached, and scored otherwise). Left out for
    TensorFlow, so that the entries made before it was keyed stay found."""
    import keras

    backend = keras.config.backend()
    return {} if backend == "tensorflow" else {"backend": backend}


def _describe_entry(
    folder: Path,
    spec: BaseSpec,
    model: Any,
    owner: str,
    seed: int,
    context: BaseContext,
    fingerprint: str | None = None,
) -> None:
    """Write what the base cached in ``folder`` is, and when it was made, beside it.

    Only ``graftune cache info`` reads it: a base is whole without it, as those
    cached by earlier versions are. What tells two entries apart is said: a
    pretrain's settings that are not their defaults, its data's, and the seed.
    """
    import time

    from orchestrator.leaderboard import atomic_write_text

    input_shape = list(model.input_shape[1:])
    if spec.pretrain is not None:
        pretrain = spec.pretrain
        architecture = pretrain.architecture or default_architecture(input_shape)
        # What tells two pretrains on one source apart (found by QA: classes were not said).
        data = pretrain.data
        # And the seed, the data's options, a learning rate (found by QA: two seeds' bases
        # read alike).
        defaults = type(pretrain).model_fields
        told = [
            f"{pretrain.epochs} epoch{'s' if pretrain.epochs != 1 else ''}",
            f"width {pretrain.width}",
            *(
                f"{key.replace('_', ' ')} {getattr(pretrain, key):g}"
                for key in ("learning_rate", "batch_size")
                if getattr(pretrain, key) != defaults[key].default
            ),
            *([f"classes {first_few([str(c) for c in data.classes], 6)}"] if data.classes else []),
            *([f"{data.labels_per_class} labels per class"] if data.labels_per_class else []),
            *(
                [f"options {ellipsized(json.dumps(data.options, sort_keys=True), 60)}"]
                if data.options
                else []
            ),
            # How many it trained on: the run's own validation and test examples are
            # left out of a pretrain on its source (found by QA: two splits read alike).
            f"{len(context.dataset(data).y_train)} training examples",
            f"seed {seed}",
            *(f"{key} {value}" for key, value in _drawn_by().items()),
        ]
        pretrained = getattr(model, "_graftune_pretrained", None)
        if pretrained is not None:
            told.append(f"test accuracy {pretrained[0]:.3f}")
        what = f"{architecture} pretrained on {data.source} ({', '.join(told)})"
    elif spec.application is not None:
        drawn = f", seed {seed}" if spec.weights == "none" else ""
        drawn += "".join(f", {k} {v}" for k, v in _drawn_by().items()) if drawn else ""
        what = f"{spec.application} ({spec.weights} weights{drawn})"
    elif spec.path is not None:
        what = f"from {spec.path}"
    else:
        what = f"made by base provider {spec.kind!r} of {owner}"
    meta = {
        "kind": spec.kind,
        "provider": owner,
        "what": what,
        "input_shape": input_shape,
        "output_shape": list(model.output_shape[1:]),
        # Checked when the entry is loaded again (see _cached_base).
        "fingerprint": fingerprint or weights_digest(model),
        "created": time.time(),
    }
    atomic_write_text(folder / ENTRY_META, json.dumps(meta, indent=2))


#: How a cached base's folder name begins (its kind), for one made before
#: :data:`ENTRY_META` was written.
_KINDS = {
    "pretrain": "pretrained base",
    "application": "keras.applications base",
    "path": "base from a .keras file",
}


def describe_cached_base(folder: Path) -> str:
    """What the whole base cached in ``folder`` is, from its :data:`ENTRY_META`.

    One made by an earlier version has none: its kind is told by its folder's
    name, and when it was made by its file's time.
    """
    import time

    def when(seconds: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))

    try:
        meta = json.loads((folder / ENTRY_META).read_text(encoding="utf-8"))
        # Its weights' digest: two bases from one path at other times read alike (QA).
        weights = f", weights {meta['fingerprint'][:12]}" if meta.get("fingerprint") else ""
        legacy = ""
        if not meta.get("fingerprint") and folder.name.startswith("pretrain-"):
            # Found by upgrade QA: before bases were keyed by backend, one pretrained
            # on JAX read as TensorFlow's, and still does: said, with the way out.
            legacy = (
                " (made by a graftune that did not record its Keras backend: TensorFlow "
                "runs take it as theirs; if it was made on JAX or PyTorch, free it with "
                "graftune cache clear --bases)"
            )
        return (
            f"{meta['what']}, input {tuple(meta['input_shape'])}, output "
            f"{tuple(meta['output_shape'])}{weights}, made {when(meta['created'])}{legacy}"
        )
    except FileNotFoundError:
        why = "cached before graftune described its bases"
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # Found by QA: said to be from before graftune described its bases.
        why = f"{unreadable(folder / ENTRY_META, exc)}; the base itself is whole"
    kind = folder.name.rpartition("-")[0]
    what = _KINDS.get(kind, f"base of provider {kind!r}")
    try:
        made = f", made {when((folder / 'base.keras').stat().st_mtime)}"
    except OSError:
        made = ""
    return f"{what}{made} ({why})"


def _params(layers: list[Any]) -> int:
    return int(sum(math.prod(w.shape) for layer in layers for w in layer.weights))


def load_base(info: BaseInfo) -> LoadedBase:
    """A prepared base for a trial, its model loaded from the cache when first used.

    Each trial gets a fresh copy of the pretrained weights.
    """
    return LoadedBase(None, info)


# -- cut points -------------------------------------------------------------------------


def find_cut_points(model: keras.Model) -> list[int]:
    """Indices of ``model.layers`` after which a single tensor carries everything on.

    Boundaries with no trainable layer since the previous kept one are merged
    into the later boundary, so each cut point freezes at least one more layer
    that fine-tuning would train. BatchNormalization does not count: it stays
    frozen whatever the cut (see :meth:`LoadedBase.freeze`), so a cut before it
    and one after it would be the same configuration. The last layer is always a
    cut point (the whole base), so ``len(result)`` is the largest ``frozen_layers``.
    """
    import keras

    layers = model.layers
    if isinstance(model, keras.Sequential) or not hasattr(model, "_inbound_nodes"):
        raw = list(range(len(layers)))
    else:
        raw = _functional_cuts(model)
    cuts: list[int] = []
    weighted_since = False
    for index, layer in enumerate(layers):
        if _fine_tuning_trains(layer):
            weighted_since = True
        if index in raw:
            if not weighted_since and cuts:
                cuts[-1] = index
            elif weighted_since:
                cuts.append(index)
                weighted_since = False
    if cuts and cuts[-1] != len(layers) - 1 and len(layers) - 1 in raw:
        cuts[-1] = len(layers) - 1
    return cuts


def _fine_tuning_trains(layer: Any) -> bool:
    """Whether unfreezing ``layer`` trains a weight of it: one made trainable, frozen
    or not now, outside BatchNormalization (which :meth:`LoadedBase.freeze` keeps
    frozen). Found by QA: EfficientNet's Normalization layer, whose mean and
    variance no training changes, made a cut point that froze nothing more than
    none (``frozen_layers`` 1 trained what 0 did)."""
    import keras

    for inner in [layer, *nested_layers(layer)]:
        if isinstance(inner, keras.layers.BatchNormalization):
            continue
        # Keras 3 keeps a layer's own variables made trainable here, a frozen one's too.
        own = getattr(inner, "_trainable_variables", None)
        if own is None:  # not a Keras 3 layer: any weight counts
            own = inner.weights
        if own:
            return True
    return False


def _functional_cuts(model: keras.Model) -> dict[int, Any]:
    """The cut points of a functional model: ``{index in model.layers: the tensor
    there}``, where once the layer (and the operations after it that are not
    layers) has run, that one tensor is all the rest of the graph still needs.

    The graph's operations are walked in order, layers and the operations that are
    not layers alike: ``a + b`` on symbolic tensors (ConvNeXt's residual sums,
    MobileNetV3's hard sigmoid) is an operation of the graph but not one of
    ``model.layers``. A tensor such an operation still needs is alive until it
    runs; and where it makes the one tensor alive (ConvNeXt's block ends in
    one), the cut is after the last layer before it, at its output.
    """
    layers = model.layers
    index_of = {id(layer): index for index, layer in enumerate(layers)}
    operations = getattr(_graph(model), "operations", None) or layers
    consumers: dict[int, int] = {}
    inputs_of: list[list[int]] = []
    outputs_of: list[list[Any]] = []
    in_graph = _nodes_in_graph(model)
    for operation in operations:
        nodes = in_graph.get(id(operation)) or operation._inbound_nodes[:1]
        ins: list[int] = []
        outs: list[Any] = []
        for node in nodes:
            ins += [id(t) for t in node.input_tensors]
            outs += list(node.output_tensors)
        inputs_of.append(ins)
        outputs_of.append(outs)
        for tensor_id in ins:
            consumers[tensor_id] = consumers.get(tensor_id, 0) + 1
    final = {id(t) for t in model.outputs}
    live: set[int] = set()
    cuts: dict[int, Any] = {}
    last_layer: int | None = None
    for position, operation in enumerate(operations):
        for tensor_id in inputs_of[position]:
            consumers[tensor_id] -= 1
            if consumers[tensor_id] == 0 and tensor_id not in final:
                live.discard(tensor_id)
        outs = outputs_of[position]
        for tensor in outs:
            if consumers.get(id(tensor), 0) > 0 or id(tensor) in final:
                live.add(id(tensor))
        if id(operation) in index_of:
            last_layer = index_of[id(operation)]
        if last_layer is not None and len(outs) == 1 and live == {id(outs[0])}:
            cuts[last_layer] = outs[0]
    return cuts


def _layer_output(model: keras.Model, index: int) -> Any:
    """The tensor at the cut after ``model.layers[index]`` inside ``model``'s own graph.

    The layer's own output, or the output of the operations after it that are
    not layers, where the cut is at theirs (:func:`_functional_cuts`). Not
    ``layer.output``: that is the tensor of the layer's first call, which
    for a nested model is its own graph's output (a graftune export's
    ``frozen_prefix``, whose input has the outer input's name), and a loaded
    Sequential model has no ``output`` at all.
    """
    import keras

    if not isinstance(model, keras.Sequential) and hasattr(model, "_inbound_nodes"):
        cut = _functional_cuts(model).get(index)
        if cut is not None:
            return cut
    layer = model.layers[index]
    for node in _nodes_in_graph(model).get(id(layer), []):
        if len(node.output_tensors) == 1:
            return node.output_tensors[0]
    return layer.output


def _nodes_in_graph(model: keras.Model) -> dict[int, list[Any]]:
    """Each layer's nodes in ``model``'s own graph, by ``id(layer)``.

    A layer may have been called in other graphs too (a loaded Sequential model
    is built more than once, a nested model's layers belong to its own graph
    as well), and ``layer._inbound_nodes`` holds them all.
    """
    by_depth = getattr(_graph(model), "_nodes_by_depth", {})
    found: dict[int, list[Any]] = {}
    for depth in sorted(by_depth, reverse=True):  # from the inputs on
        for node in by_depth[depth]:
            found.setdefault(id(node.operation), []).append(node)
    return found


def _graph(model: keras.Model) -> keras.Model:
    """The functional graph of ``model``: a Sequential model keeps its own inside."""
    return getattr(model, "_functional", None) or model


# -- input adaptation ------------------------------------------------------------------


def plan_adapter(
    data_shape: tuple[int, ...],
    base_shape: tuple[int | None, ...],
    preprocessing: str | None = None,
    provider: str | None = None,
) -> list[tuple[Any, ...]]:
    """The steps that turn the data's input into the base's, or a clear refusal.

    Well-defined adaptations only: resizing images, grayscale to 3 channels,
    flattening images for a dense base, and a keras.applications family's scaling.
    ``provider``: the plugin's base provider that made the base and chose its
    preprocessing (``'name' from distribution``), which a refusal names.

    Raises:
        BaseModelError: When the data cannot feed the base.
    """
    data_shape = tuple(data_shape)
    base_shape = tuple(base_shape)
    steps: list[tuple[Any, ...]] = []
    hint = ""
    wanted = base_shape[2] if len(base_shape) == 3 == len(data_shape) else None
    if wanted in (1, 3) and wanted != data_shape[2]:
        # data.channels takes 1 or 3 (found by QA: the hint said data.channels: 4).
        hint = f"; for images, data.channels: {wanted} gives them the base's channels"
    # Found by QA: a plugin's base was refused without naming its provider.
    made = "" if provider is None else f" (made by base provider {provider})"
    which = (
        "for an application: base.input_shape" if provider is None else "its options may choose one"
    )
    refuse = BaseModelError(
        f"the data's inputs have shape {data_shape} but the base{made} takes {base_shape}; "
        "graftune adapts images by resizing, grayscale to 3 channels and flattening for "
        f"dense bases, but not this. Use a base whose input matches the data ({which}){hint}."
    )
    if _matches(data_shape, base_shape):
        pass
    elif len(base_shape) == 3 and len(data_shape) == 3:
        height, width, channels = base_shape
        if (height, width) != data_shape[:2] and height is not None and width is not None:
            steps.append(("resize", int(height), int(width)))
        if channels != data_shape[2] and channels is not None:
            if data_shape[2] == 1 and channels == 3:
                steps.append(("gray_to_rgb",))
            else:
                raise refuse
    elif len(base_shape) == 1 and len(data_shape) > 1:
        if base_shape[0] is not None and math.prod(data_shape) != base_shape[0]:
            raise refuse
        steps.append(("flatten",))
    else:
        raise refuse
    if preprocessing:
        if len(base_shape) != 3:  # found by QA: "inputs have shape (4,) but the base takes (4,)"
            raise BaseModelError(
                f"the base{made} takes inputs of shape {base_shape}, not images, but its "
                f"preprocessing is {preprocessing!r}, a scaling of images: a base provider's "
                "preprocessing() gives one only for a base that takes images (None otherwise)"
            )
        if preprocessing in ("caffe", "torch") and base_shape[2] != 3 and provider:
            # The provider's doing (found by QA: pointed at base.input_shape, no key of
            # a provider's base).
            raise BaseModelError(
                f"base provider {provider} gives its base of {base_shape[2]} channel(s) "
                f"the {preprocessing!r} scaling of RGB images: its preprocessing() should "
                "give one only for a base that takes 3 channels",
                key="provider",
            )
        if preprocessing in ("caffe", "torch") and base_shape[2] != 3:
            raise BaseModelError(
                f"the base takes {base_shape[2]} channel(s), but its {preprocessing!r} scaling "
                "is of RGB images: give it 3 channels (base.input_shape [H, W, 3]; grey "
                "images are repeated to RGB)",
                key="input_shape",
            )
        steps.append(("preprocess", preprocessing))
    return steps


def _matches(data_shape: tuple[int, ...], base_shape: tuple[int | None, ...]) -> bool:
    return len(data_shape) == len(base_shape) and all(
        b is None or b == d for d, b in zip(data_shape, base_shape, strict=False)
    )


def adapter_params(steps: tuple[tuple[Any, ...], ...]) -> int:
    """The weights :func:`apply_adapter`'s layers hold for ``steps``: only the
    ``caffe`` scaling's fixed 1x1 convolution has any (3 to 3 channels, with
    biases: 12); the others resize, repeat, flatten or scale by constants."""
    return 12 if ("preprocess", "caffe") in steps else 0


def apply_adapter(x: Any, steps: tuple[tuple[Any, ...], ...]) -> Any:
    """Build the adapter's layers on a symbolic tensor; every layer is safe to reload."""
    import keras
    import numpy as np

    for step in steps:
        kind = step[0]
        if kind == "resize":
            x = keras.layers.Resizing(step[1], step[2], name="adapt_resize")(x)
        elif kind == "gray_to_rgb":
            x = keras.layers.Concatenate(axis=-1, name="adapt_gray_to_rgb")([x, x, x])
        elif kind == "flatten":
            x = keras.layers.Flatten(name="adapt_flatten")(x)
        elif kind == "preprocess":
            mode = step[1]
            if mode == "caffe":
                # One fixed 1x1 convolution does x*255, RGB -> BGR and the mean subtraction.
                kernel = np.zeros((1, 1, 3, 3), dtype="float32")
                for out in range(3):
                    kernel[0, 0, 2 - out, out] = 255.0
                # Zeros, not Keras' random default: drawing one would shift every random
                # number after it (the head's initial weights), so a trial through the
                # adapter would start unlike one on cached features with the same seed.
                layer = keras.layers.Conv2D(
                    3,
                    1,
                    trainable=False,
                    kernel_initializer="zeros",
                    bias_initializer="zeros",
                    name="adapt_caffe",
                )
                x = layer(x)
                layer.set_weights([kernel, -np.asarray(_CAFFE_MEAN_BGR, dtype="float32")])
            elif mode == "tf":
                x = keras.layers.Rescaling(2.0, offset=-1.0, name="adapt_scale")(x)
            elif mode == "torch":
                x = keras.layers.Normalization(
                    mean=list(_TORCH_MEAN),
                    variance=[s * s for s in _TORCH_STD],
                    name="adapt_normalize",
                )(x)
            elif mode == "raw255":
                x = keras.layers.Rescaling(255.0, name="adapt_scale")(x)
            else:
                raise ValueError(f"unknown preprocessing {mode!r}")
        else:
            raise ValueError(f"unknown adapter step {kind!r}")
    return x


# -- helpers for keras.applications ------------------------------------------------


def _application_function(name: str) -> Any:
    import keras

    names = sorted(n for n in dir(keras.applications) if n[:1].isupper())
    if name not in names:
        raise BaseModelError(
            f"unknown keras application {name!r}{did_you_mean(name, names)}; "
            f"available: {', '.join(names)}",
            key="application",
        )
    return getattr(keras.applications, name)


def _input_shape(spec: BaseSpec) -> tuple[int, ...]:
    return tuple(spec.input_shape) if spec.input_shape else (224, 224, 3)


def _quiet_about_channels() -> None:
    """Leave out Keras' warning that an application "usually expects 1 or 3 input
    channels" (found by QA: said twice, once as graftune's own line): imagenet
    weights at other channels are refused, and data that cannot take them too
    (:func:`plan_adapter`); with ``weights: none`` any channels train."""
    warnings.filterwarnings("ignore", message="This model usually expects 1 or 3 input channels")


@contextlib.contextmanager
def _resolution_said(application: str) -> Iterator[None]:
    """Say in graftune's words Keras' warning that a MobileNet's imagenet weights are
    those of 224x224 images, which it printed as a raw Python warning with its
    source line (found by QA); other warnings go on as they were."""
    with warnings.catch_warnings(record=True) as caught:
        yield
    for found in caught:
        if "will be loaded as the default" in str(found.message):
            log.warning(
                "%s's imagenet weights were trained on 224x224 images, and base.input_shape "
                "is another size: they are used as they are (features of images much "
                "smaller than 224 transfer less well; data.image_size can make them larger)",
                application,
            )
        else:
            warnings.warn_explicit(found.message, found.category, found.filename, found.lineno)


class _InputShapeChecked(Exception):
    """Ends an application's build once Keras has checked its input shape."""


def _check_application_input(function: Any, spec: BaseSpec) -> None:
    """Keras' own rules for the application's ``input_shape`` (at least 32x32, ...), for validate.

    Most applications check the shape first, in ``obtain_input_shape``; the
    build is stopped there, so the check costs nothing. The others are built
    whole, without weights (about a second).

    Raises:
        BaseModelError: At ``input_shape``, with Keras' reason.
    """
    try:
        from keras.src.applications import imagenet_utils
    except ImportError:  # Keras moved it: build whole
        imagenet_utils = None
    original = getattr(imagenet_utils, "obtain_input_shape", None)

    def checked_only(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise _InputShapeChecked

    if original is not None:
        imagenet_utils.obtain_input_shape = checked_only
    try:
        with warnings.catch_warnings():
            _quiet_about_channels()
            function(include_top=False, weights=None, input_shape=_input_shape(spec))
    except _InputShapeChecked:
        pass
    except ValueError as exc:
        raise BaseModelError(
            f"{spec.application} cannot take input_shape {list(_input_shape(spec))}: {exc}",
            key="input_shape",
        ) from None
    finally:
        if original is not None:
            imagenet_utils.obtain_input_shape = original


def _looks_like_download_failure(exc: BaseException) -> bool:
    text = str(exc)
    return "URL fetch failure" in text or "http" in text.lower()


def _offline_message(application: str, exc: BaseException) -> str:
    match = re.search(r"https?://\S+?\.h5", str(exc))
    filename = match.group(0).rsplit("/", 1)[-1] if match else "the weights file"
    url = match.group(0) if match else "(see Keras' applications documentation)"
    target = keras_models_dir() / filename
    return (
        f"cannot download the imagenet weights of {application} ({filename}): {exc}\n"
        f"This machine seems to be offline. Either:\n"
        f"  - copy {filename} (from {url}, fetched once on a connected machine) to {target} "
        f"(Keras looks in $KERAS_HOME/models, else ~/.keras/models), or\n"
        f"  - set `weights: /path/to/{filename}` in the recipe's base: section, or\n"
        f"  - set `weights: none` to start from random weights."
    )


@contextlib.contextmanager
def _refusing_wrong_weights_files(application: str) -> Iterator[None]:
    """Refuse a weights file in :func:`keras_models_dir` whose hash is not the one Keras expects.

    Keras takes such a file for a download cut short: it downloads the weights
    again and, offline, deletes the file it found, a copy the user put there as
    graftune's offline message said. The check is made where Keras asks for the
    file (``get_file``, with the name and hash each application passes it), and
    the download is never tried.

    Raises:
        BaseModelError: At ``weights``, with the file's size and both hashes.
    """
    try:
        from keras.src.utils import file_utils
    except ImportError:  # Keras moved it: its own behaviour
        yield
        return
    original = file_utils.get_file

    def checked(fname: Any = None, origin: Any = None, *args: Any, **kwargs: Any) -> Any:
        expected = kwargs.get("file_hash") or kwargs.get("md5_hash")
        own_folder = kwargs.get("cache_subdir") == "models" and kwargs.get("cache_dir") is None
        target = keras_models_dir() / str(fname) if fname and own_folder else None
        if expected and target is not None and target.is_file():
            algorithm = "md5" if kwargs.get("md5_hash") else kwargs.get("hash_algorithm", "auto")
            hasher = file_utils.resolve_hasher(algorithm, expected)
            found = file_utils.hash_file(str(target), hasher)
            if found != expected:
                raise BaseModelError(
                    f"{target} is not the imagenet weights Keras expects for {application}: "
                    f"it has {target.stat().st_size} bytes and {hasher.name} {found}, Keras "
                    f"expects {hasher.name} {expected} (a copy cut short, or of another Keras "
                    f"version?). Replace it with {fname} from {origin}, or set `weights: "
                    "/path/to/weights.h5` (or `weights: none`); graftune leaves it in place",
                    key="weights",
                )
        return original(fname, origin, *args, **kwargs)

    file_utils.get_file = checked
    try:
        yield
    finally:
        file_utils.get_file = original


def _graftune_version() -> str:
    from orchestrator import __version__

    return __version__


def _entry_name(key: str) -> str:
    """The cache entry's name for a provider's key: the built-ins' sha256 digests
    by their first 16 hex digits, any other text by its own digest's (a key with
    ``/`` or ``..`` named a folder outside the cache, and two keys that began
    alike shared one entry). :data:`BASE_ENTRY_NAME` matches its folder."""
    return (key if re.fullmatch(r"[0-9a-f]{64}", key) else _digest(key))[:16]


#: A cached base's folder under ``bases/``: ``KIND-`` and :func:`_entry_name`.
BASE_ENTRY_NAME = re.compile(r".+-[0-9a-f]{16}")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def weights_digest(model: keras.Model, architecture: str | None = None) -> str:
    """A base's fingerprint: its architecture and every weight (``BaseInfo.fingerprint``).

    ``architecture``: the model's ``to_json()`` to take instead of its own now.
    """
    sha = hashlib.sha256(json.dumps(architecture or model.to_json(), sort_keys=True).encode())
    for weight in model.weights:
        sha.update(weight.numpy().tobytes())
    return sha.hexdigest()
