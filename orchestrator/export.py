"""Export a run's model for use without graftune: a ``.keras`` file or a TensorFlow SavedModel.

Both formats carry the model's own preprocessing (the standardisation and
input adapters are Keras layers inside the saved model) and a
``graftune.json`` naming the classes of the output columns. Loading them needs
Keras/TensorFlow only:

- ``keras``: ``DEST/model.keras`` for ``keras.saving.load_model(...)``;
- ``savedmodel``: ``DEST/`` is a SavedModel (``model.export(...,
  format="tf_saved_model")``): ``loaded = tf.saved_model.load(DEST)``, then
  ``loaded.serve(x)`` (keep ``loaded``: its variables go with it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from orchestrator.errors import RunDirError, cannot_make_in, temporary_name

FORMATS = ("keras", "savedmodel")
METADATA_FILE = "graftune.json"
KERAS_FILE = "model.keras"


def export_model(
    run_dir: str | Path, dest: str | Path, *, format: str = "keras", trial: str | None = None
) -> Path:
    """Write a run's best (or named) model with its class names to a new folder.

    The folder is assembled beside ``dest`` and renamed into place, so ``dest``
    never holds half an export.

    Args:
        run_dir: A run directory.
        dest: The folder to create (it may exist only if empty).
        format: ``keras`` or ``savedmodel``.
        trial: A trial id or ``STRATEGY/TRIAL_ID``; default the run's best trial.

    Returns:
        ``dest``.

    Raises:
        RunDirError: No such run, trial or model; the model cannot be loaded (a
            custom Keras object no imported code registers); ``dest`` is taken
            or inside a run directory; an unknown format.
        BackendMissing: Keras' backend is not installed.
    """
    from orchestrator import __version__
    from orchestrator.accelerator import check_backend
    from orchestrator.predict import find_model, load_model, trained_features
    from orchestrator.recipe import run_dir_around
    from orchestrator.trial import TOP_FILE, save_model

    if format not in FORMATS:
        raise RunDirError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    check_backend(training=False)
    if format == "savedmodel":
        _need_tensorflow()
    if str(dest) == "-":
        # Found by QA: a folder named "-" was made, where "-" is stdout to every other
        # command's --out.
        raise RunDirError(
            "export writes a folder (the model, its class names, how to load it), which "
            "cannot go to stdout: give the folder to create (for one named -, its whole path)"
        )
    ref = find_model(run_dir, trial)
    dest = Path(dest)
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise RunDirError(f"{dest} exists; export to a new (or empty) folder")
    from orchestrator.paths import path_problem

    problem = path_problem(dest)
    if problem is not None:
        raise RunDirError(f"cannot export there: {problem}")
    if dest.is_symlink() and not dest.exists():  # found by QA: an internal error at the end
        raise RunDirError(
            f"{dest} is a link to nowhere ({os.readlink(dest)}); export to a new (or empty) folder"
        )
    inside = run_dir_around(dest)
    if inside is not None:  # predict would take a folder in trials/ for a trial
        raise RunDirError(
            f"cannot export to {dest}: it is inside the run directory {inside}, whose "
            "files graftune reads; export to a folder elsewhere"
        )
    # An empty folder that exists (".", a link to one) is filled in place, so the folder
    # itself (a shell's working directory, a link's target) stays; found by QA: "."
    # staged inside itself, and a link was removed as if a folder.
    in_place = dest.exists()
    problem = cannot_make_in(dest if in_place else dest.parent)  # before the model is loaded
    if problem is not None:
        raise RunDirError(f"cannot export to {dest}: {problem}")
    made: list[Path] = []  # the folders above dest this export makes, deepest first
    if in_place:
        staging = dest / temporary_name("export")
    else:
        made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / temporary_name(dest.name)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if format == "keras":
            if ref.path.name == TOP_FILE:
                # A trial on cached features: its trained part behind the base's prefix.
                save_model(load_model(ref), staging / KERAS_FILE)
            else:
                # Loaded first, so a file that cannot be is refused, not copied.
                load_model(ref)
                # The run's file as it is: byte for byte the model that was scored.
                shutil.copyfile(ref.path, staging / KERAS_FILE)
            custom = _custom_objects(staging / KERAS_FILE)
            how = _how_to_load(custom)
        else:
            model = load_model(ref)
            # TensorFlow's absl logging calls logging.basicConfig() as it saves: a handler
            # on the root logger, and the caller's own basicConfig did nothing after
            # (found by QA, from Python). Put back as it was.
            root = logging.getLogger()
            handlers = list(root.handlers)
            try:
                model.export(str(staging), format="tf_saved_model", verbose=False)
            finally:
                for added in [h for h in root.handlers if h not in handlers]:
                    root.removeHandler(added)
            # Run in the export folder, as the .keras line (found by QA: no import, no folder).
            how = (
                "import tensorflow as tf; loaded = tf.saved_model.load('.'); "
                "loaded.serve(tf.constant(x, tf.float32))"
            )
        metadata: dict[str, Any] = {
            "format": format,
            "model": KERAS_FILE if format == "keras" else ".",
            "load": how,
            # Registered name -> the class or function to give load_model (plugins' own).
            **({"custom_objects": custom} if format == "keras" and custom else {}),
            "class_names": list(ref.class_names),
            "input_shape": list(ref.input_shape),
            # A table's feature columns, in the order the model takes them.
            "features": trained_features(run_dir),
            "input": "float32 batches of shape (n, *input_shape), prepared like the run's "
            "data: images scaled to [0, 1], tables as raw numbers, as the run gave them to "
            "the model (graftune's own strategies standardise inside it)",
            "output": "float32 probabilities of shape (n, len(class_names)); column i is "
            "class_names[i]",
            "strategy": ref.strategy,
            "trial_id": ref.trial_id,
            "config": ref.summary.get("config", {}),
            "scores": {
                k: ref.summary.get(k)
                for k in ("val_accuracy", "test_accuracy", "val_loss", "test_loss")
            },
            "run_dir": str(Path(run_dir).resolve()),
            "graftune_version": __version__,
        }
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str) + "\n")
        from orchestrator.tuning.ray_start import raise_if_interrupted

        # A Ctrl+C Python dropped (raised in a garbage collection's callback while the
        # model loaded) stops it here, nothing exported (found by QA: it went on, exit 0).
        raise_if_interrupted()
        if in_place:  # each file renamed in: the same file system, nothing copied
            for item in staging.iterdir():
                os.replace(item, dest / item.name)
            staging.rmdir()
        else:
            try:
                os.replace(staging, dest)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
                # Found by QA: two exports to one new folder at once; the second was
                # an internal error (a file made there meanwhile named the staging folder).
                raise RunDirError(
                    f"{dest} exists (made meanwhile by another process); export to a new "
                    "(or empty) folder"
                ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # found by QA: a refused export left them behind
            with contextlib.suppress(OSError):  # not empty: made meanwhile by another
                folder.rmdir()
        raise
    return dest


#: The Keras backends whose models Keras exports as a SavedModel.
SAVEDMODEL_BACKENDS = ("tensorflow", "jax", "torch")


def _need_tensorflow() -> None:
    """A SavedModel is TensorFlow's format: Keras writes it with TensorFlow from the
    TensorFlow, JAX and PyTorch backends (not numpy's or OpenVINO's, found by QA:
    an internal error)."""
    import keras

    backend = keras.config.backend()
    if backend not in SAVEDMODEL_BACKENDS:
        raise RunDirError(
            f"--format savedmodel: Keras exports a SavedModel from the "
            f"{', '.join(SAVEDMODEL_BACKENDS)} backends, and this one is {backend} "
            "(KERAS_BACKEND); --format keras works on any"
        )
    try:
        import tensorflow  # noqa: F401
    except ImportError as exc:
        raise RunDirError(
            "--format savedmodel writes a TensorFlow SavedModel and needs TensorFlow "
            "(pip install tensorflow; Keras' backend may stay as it is); "
            "--format keras needs nothing more"
        ) from exc


def _custom_objects(path: Path) -> dict[str, str]:
    """The custom Keras objects a saved ``.keras`` model names (a plugin's layer):
    registered name -> where the class or function is (``module.name``).

    Importing that module does not register the name: a plugin's object is
    registered by graftune (``graftune_keras_objects``), so ``load_model``
    outside graftune needs it in ``custom_objects``.
    """
    import zipfile

    import keras

    with zipfile.ZipFile(path) as saved:
        config = json.loads(saved.read("config.json"))
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("registered_name")
            if isinstance(name, str) and ">" in name:
                names.add(name)
            # A function (an activation) is saved as {"class_name": "function",
            # "config": "<registered name>", "registered_name": "function"}.
            config = node.get("config")
            if node.get("class_name") == "function" and isinstance(config, str) and ">" in config:
                names.add(config)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    registered = keras.saving.get_custom_objects()
    found = {}
    for name in sorted(names):
        # Only what this process registered, named by a class or function at the top
        # of its module (found by QA: a name from an untrusted model.keras, in a key
        # Keras ignores, was pasted into the `load` line as Python, and ran).
        obj = registered.get(name)
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if (
            isinstance(module, str)
            and isinstance(qualname, str)
            and all(part.isidentifier() for part in module.split("."))
            and qualname.isidentifier()
        ):
            found[name] = f"{module}.{qualname}"
    return found


def _how_to_load(custom: dict[str, str]) -> str:
    """The ``load`` line of ``graftune.json`` for a ``.keras`` export (``custom``:
    from :func:`_custom_objects`, each ``module.name`` of identifiers)."""
    load = f"model = keras.saving.load_model({KERAS_FILE!r}, safe_mode=True"
    if not custom:
        return f"import keras; {load}); model.predict(x)"
    imports = "; ".join(
        f"from {where.rpartition('.')[0]} import {where.rpartition('.')[2]}"
        for where in custom.values()
    )
    given = ", ".join(f"{name!r}: {where.rpartition('.')[2]}" for name, where in custom.items())
    return f"import keras; {imports}; {load}, custom_objects={{{given}}}); model.predict(x)"


__all__ = ["FORMATS", "METADATA_FILE", "export_model"]
