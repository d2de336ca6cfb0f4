"""Strategies and observers registered by the end-to-end tests (not installed).

Ray workers receive these classes by value (see ``register_pickle_by_value`` in
the tests), as they would receive any plugin installed on the cluster.
"""

from __future__ import annotations

from typing import Any

from orchestrator import Choice, Fixed, LogFloat, Strategy, hookimpl
from orchestrator.builtin_plugins.scratch_mlp import ScratchMLP

#: What the observers saw, in the driver process.
SEEN: dict[str, list[Any]] = {"trials": [], "runs": []}


def tiny_space(**more: Any) -> dict[str, Any]:
    """The fixed space of a one-layer MLP of 8 units, with ``more`` added or replaced."""
    return {
        "hidden_layers": Fixed(1),
        "width": Fixed(8),
        "lambda": Fixed(0.0),
        "learning_rate": Fixed(1e-2),
        **more,
    }


class ExplodingMLP(ScratchMLP):
    """An MLP trained with a learning rate so large its loss overflows."""

    name = "exploding_mlp"
    description = "diverges on purpose"

    def search_space(self, context):
        return {
            "hidden_layers": Fixed(1),
            "width": Fixed(16),
            "lambda": Fixed(0.0),
            "learning_rate": Choice((1.0e30, 1.0e32)),
        }

    def build(self, config, task, base):
        import keras

        model = super().build(config, task, base)
        model.compile(
            optimizer=keras.optimizers.SGD(float(config["learning_rate"])),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model


class LateExplodingMLP(ScratchMLP):
    """Trains one whole epoch, then at a learning rate so large its loss overflows:
    diverged, with the score of its first epoch."""

    name = "late_exploding_mlp"
    description = "diverges after its first epoch"

    def search_space(self, context):
        return {
            "hidden_layers": Fixed(1),
            "width": Fixed(16),
            "lambda": Fixed(0.0),
            "learning_rate": Choice((0.01, 0.02)),
        }

    def fit(self, model, config, data, *, epochs, callbacks):
        super().fit(model, config, data, epochs=1, callbacks=callbacks)
        if model.stop_training or epochs < 2:
            return model
        model.optimizer.learning_rate.assign(1.0e30)
        return super().fit(model, config, data, epochs=epochs - 1, callbacks=callbacks)


class RaisingStrategy(Strategy):
    """A strategy whose build always fails."""

    name = "raising"
    description = "raises on purpose"

    def search_space(self, context):
        # Two dimensions: Ray checks a trial's last result for the metric only when
        # it holds more than one other key (a failing trial must still report it).
        return {"learning_rate": LogFloat(1e-3, 1e-2), "width": Fixed(8)}

    def build(self, config, task, base):
        # What a plugin says on its way to the error: kept in the trial's output.txt.
        import logging
        import os
        import warnings

        print("raising: about to fail")
        print(f"raising: working in {os.getcwd()}")
        warnings.warn("raising: a warning first", stacklevel=1)
        logging.getLogger("raising").warning("raising: a log record too")
        raise RuntimeError("deliberate failure in build")


class _Unsayable(Exception):
    def __str__(self):
        raise RuntimeError("str() of it blew up")


class UnsayableStrategy(RaisingStrategy):
    """Raises errors that are hard to say (found by QA): 200,000 characters, lone
    surrogates (an ``os.fsdecode``'d file name), an ``__str__`` that raises."""

    name = "unsayable"
    description = "raises errors that are hard to say"

    def search_space(self, context):
        return {"kind": Choice(("huge", "surrogate", "unsayable")), "width": Fixed(8)}

    def build(self, config, task, base):
        kind = config["kind"]
        if kind == "huge":
            raise RuntimeError("x" * 200_000)
        if kind == "surrogate":
            raise RuntimeError("no file \udcff\udcfe here")
        raise _Unsayable()


class NoAccuracyMLP(ScratchMLP):
    """Compiles its model without the accuracy metric the contract asks for."""

    name = "no_accuracy_mlp"

    def search_space(self, context):
        return tiny_space()

    def build(self, config, task, base):
        import keras

        model = keras.Sequential(
            [
                keras.Input(task.input_shape),
                keras.layers.Flatten(),
                keras.layers.Dense(task.n_classes, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model


class SilentFitMLP(ScratchMLP):
    """A ``fit`` of its own that forgets graftune's callbacks: no epoch is reported."""

    name = "silent_fit_mlp"

    def search_space(self, context):
        return tiny_space()

    def fit(self, model, config, data, *, epochs, callbacks):
        model.fit(data.x_train, data.y_train, epochs=epochs, verbose=0)
        return model


class OvertimeMLP(SilentFitMLP):
    """Trains more epochs than it was given."""

    name = "overtime_mlp"

    def fit(self, model, config, data, *, epochs, callbacks):
        model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            epochs=epochs + 2,
            callbacks=callbacks,
            verbose=0,
        )
        return model


class ExitingMLP(ScratchMLP):
    """Calls ``sys.exit`` in ``fit`` for a width of 9 (found by QA: it ended keras_tuner's run)."""

    name = "exiting_mlp"

    def search_space(self, context):
        return tiny_space(width=Choice((8, 9)))

    def fit(self, model, config, data, *, epochs, callbacks):
        if int(config["width"]) == 9:
            raise SystemExit("exits on purpose at width 9")
        return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)


@hookimpl
def graftune_register_strategies(registry):
    for strategy in (
        ExplodingMLP,
        LateExplodingMLP,
        ExitingMLP,
        RaisingStrategy,
        UnsayableStrategy,
        DyingMLP,
        KillingMLP,
        TogetherMLP,
        HungryMLP,
        PacedMLP,
        InterruptedMLP,
        NoAccuracyMLP,
        SilentFitMLP,
        OvertimeMLP,
    ):
        registry.add(strategy)


@hookimpl
def graftune_trial_finished(result, run_dir):
    SEEN["trials"].append((result.strategy, result.status))


@hookimpl
def graftune_run_finished(leaderboard, run_dir):
    SEEN["runs"].append((len(leaderboard), run_dir))


class BrokenObserver:
    """An observer that raises: reported, never fatal."""

    @hookimpl
    def graftune_trial_finished(self, result):
        raise ValueError("observer failure")


class DyingMLP(ScratchMLP):
    """An MLP whose worker process dies (SIGKILL) the first time, or every time.

    ``die``: ``"once"`` kills the worker unless the marker file exists (and
    creates it first), ``"always"`` kills it on every attempt. ``trained``: the
    epochs a dying attempt trains (and reports) before it dies.
    """

    name = "dying_mlp"
    description = "kills its own worker on purpose"

    def search_space(self, context):
        return tiny_space(die=Fixed("once"), marker=Fixed(""), trained=Fixed(0))

    def fit(self, model, config, data, *, epochs, callbacks):
        # In fit, not build: a run builds every strategy once in the driver first.
        import os
        import signal
        from pathlib import Path

        import ray

        if ray.get_runtime_context().get_actor_id() is None:
            # Not a Ray trial worker: never kill the driver.
            return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)
        marker = Path(config["marker"])
        if config["die"] == "always" or not marker.exists():
            marker.touch()
            if config["trained"]:
                super().fit(model, config, data, epochs=config["trained"], callbacks=callbacks)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)


class KillingMLP(ScratchMLP):
    """An MLP that kills the process it trains in (SIGKILL, as an out-of-memory kill
    does) for its configurations of ``width`` ``kill_width``, every time unless
    ``$GRAFTUNE_TEST_SPARE`` is set (what killed it is gone): run it with the
    keras_tuner backend in a process of its own. It trains ``kill_after`` epochs
    first (reported, as a trial killed midway has)."""

    name = "killing_mlp"
    description = "kills its own process for one width"

    def search_space(self, context):
        return tiny_space(width=Choice((8, 16)), kill_width=Fixed(16), kill_after=Fixed(0))

    def fit(self, model, config, data, *, epochs, callbacks):
        import os

        if config["width"] == config["kill_width"] and not os.environ.get("GRAFTUNE_TEST_SPARE"):
            import signal

            if config["kill_after"]:
                super().fit(model, config, data, epochs=config["kill_after"], callbacks=callbacks)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)


class TogetherMLP(ScratchMLP):
    """An MLP whose trials wait for one another before they train: each marks its
    start in the folder ``$GRAFTUNE_TEST_TOGETHER`` and waits (2 minutes at most)
    until ``together`` trials have; a trial that waits in vain fails, saying so.
    Trials that all end have all run at once, however slowly they started."""

    name = "together_mlp"
    description = "waits for its fellow trials, then trains a tiny MLP"

    def search_space(self, context):
        return tiny_space(together=Fixed(4), folder=Fixed(""))

    def fit(self, model, config, data, *, epochs, callbacks):
        import os
        import time
        import uuid
        from pathlib import Path

        # The recipe's folder where it gives one: a cluster's workers do not see this
        # process's environment.
        folder = Path(config["folder"] or os.environ["GRAFTUNE_TEST_TOGETHER"])
        (folder / uuid.uuid4().hex).touch()
        deadline = time.monotonic() + 120
        while len(list(folder.iterdir())) < int(config["together"]):
            if time.monotonic() > deadline:
                started = len(list(folder.iterdir()))
                raise RuntimeError(f"only {started} of {config['together']} trials ran at once")
            time.sleep(0.1)
        return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)


class PacedMLP(ScratchMLP):
    """An MLP that waits ``pace_s`` seconds after each epoch: its trials last as long
    as on a slow machine while leaving the CPU to the rest of the test session."""

    name = "paced_mlp"
    description = "trains a tiny MLP, waiting after each epoch"

    def search_space(self, context):
        return {**super().search_space(context), "pace_s": Fixed(0.5)}

    def fit(self, model, config, data, *, epochs, callbacks):
        import time

        import keras

        pace = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: time.sleep(float(config["pace_s"]))
        )
        return super().fit(model, config, data, epochs=epochs, callbacks=[*callbacks, pace])


class HungryMLP(ScratchMLP):
    """An MLP whose ``fit`` first touches ``hog_mb`` MiB of memory, then frees it."""

    name = "hungry_mlp"
    description = "holds some memory for a moment, then trains a tiny MLP"

    def search_space(self, context):
        return tiny_space(hog_mb=Choice((600, 0)))

    def fit(self, model, config, data, *, epochs, callbacks):
        import numpy as np

        hog = np.ones(int(config["hog_mb"]) * 2**20, dtype=np.uint8)  # resident: written
        del hog
        return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)


class InterruptedMLP(ScratchMLP):
    """An MLP whose process is sent a signal in its second trial, once.

    Its ``fit`` counts its calls in ``MARKER.calls``; the second call creates
    ``marker`` and sends its own process ``signal`` (``SIGINT``, as Ctrl+C
    does, or ``SIGTERM``), unless ``marker`` exists. It refuses to send SIGTERM
    while SIGTERM has its default action, which would end the test session.
    ``SIGTERM-dropped`` (``SIGINT-dropped``) runs the SIGTERM (SIGINT) handler
    where Python drops what it raises, and trains on; ``SIGINT-converted`` catches
    the KeyboardInterrupt and raises a ValueError, as TensorFlow's code may.
    """

    name = "interrupted_mlp"
    description = "sends its own process a signal in its second trial"

    def search_space(self, context):
        return tiny_space(
            learning_rate=LogFloat(1e-3, 1e-2), marker=Fixed(""), signal=Fixed("SIGINT")
        )

    def fit(self, model, config, data, *, epochs, callbacks):
        from pathlib import Path

        marker = Path(config["marker"])
        calls = marker.with_suffix(".calls")
        count = int(calls.read_text()) if calls.exists() else 0
        calls.write_text(str(count + 1))
        if count == 1 and not marker.exists():
            import os
            import signal
            import time

            marker.touch()
            if config["signal"].endswith("-dropped"):
                # The handler run inside a finaliser, as when the signal arrives during
                # a garbage collection: Python prints its KeyboardInterrupt and drops it.
                dropped = signal.Signals[config["signal"].removesuffix("-dropped")]
                handler = signal.getsignal(dropped)
                assert callable(handler), f"nothing handles {dropped.name} in this process"

                class Collected:
                    def __del__(self) -> None:
                        handler(dropped, None)

                Collected()  # collected at once
                return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)
            converted = config["signal"].endswith("-converted")
            signum = signal.Signals[config["signal"].removesuffix("-converted")]
            if signal.getsignal(signum) is signal.SIG_DFL:
                raise AssertionError(f"nothing handles {signum.name} in this process")
            try:
                os.kill(os.getpid(), signum)
                time.sleep(5)  # the handler raises in this thread before this ends
            except KeyboardInterrupt:
                if converted:  # as TensorFlow's code may turn it into an error of its own
                    raise ValueError("None values not supported.") from None
                raise
            raise AssertionError(f"{signum.name} did not stop the trial")
        return super().fit(model, config, data, epochs=epochs, callbacks=callbacks)
