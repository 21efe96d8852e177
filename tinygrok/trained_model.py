"""A trained model back from its run folder, to ask it your own questions.

A run keeps its settings in ``config.json`` and its parameters in ``checkpoint.npz`` (as
``param/<name>`` arrays, named as ``Transformer.state_dict()`` names them). ``load_model``
builds the run's model from those settings and loads those parameters. A complete run's
checkpoint holds its final parameters; an unfinished run's, those of its last checkpoint
(every 500 steps by default).

    from tinygrok.autograd import no_grad
    from tinygrok.trained_model import load_model
    model, step = load_model("runs/x_div_y-s0")
    with no_grad():  # no graph to keep for a backward pass
        logits, patterns = model(tokens, return_attention=True)  # one (B, H, T, T) per layer
    answers = logits.data.argmax(axis=1)  # logits is a Tensor; .data is its NumPy array

``tokens`` are (B, 4) token ids ``[x, o, y, =]``: ``tinygrok.tasks.make_task`` builds every
example of a task as ``task.inputs``, with ``task.labels`` the answers.
"""

import dataclasses
import json
import zipfile
from pathlib import Path

from tinygrok import runfiles
from tinygrok.model import Transformer
from tinygrok.tasks import make_task
from tinygrok.train import CHECKPOINT, TrainConfig, new_model, saved_settings


def load_model(run_dir) -> tuple[Transformer, int]:
    """The model trained in ``run_dir``, with its checkpoint's parameters, and the step of
    that checkpoint."""
    run_dir = Path(run_dir)
    config_path, checkpoint_path = run_dir / "config.json", run_dir / CHECKPOINT
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no config.json: it is not a run's folder")
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {CHECKPOINT}: its run saved no "
                                f"checkpoint (a run saves one as it starts, then every "
                                f"checkpoint_every steps and at its end)")
    try:
        saved = json.loads(config_path.read_text())
        if not runfiles.is_run_config(saved):
            raise ValueError("config.json names no task and version, as a run's does")
        names = {field.name for field in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{k: v for k, v in saved_settings(saved).items() if k in names})
        model = new_model(config, make_task(config.task, config.p))
        arrays = runfiles.read_npz(checkpoint_path)
        model.load_state_dict({name[len("param/"):]: value for name, value in arrays.items()
                               if name.startswith("param/")})
        return model, int(arrays["step"])
    except (OSError, EOFError, KeyError, TypeError, ValueError, AttributeError, MemoryError,
            zipfile.BadZipFile) as error:
        raise ValueError(f"cannot load the model of {run_dir}: its config.json or "
                         f"{CHECKPOINT} is damaged or not a run's ({error})") from None
