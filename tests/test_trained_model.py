"""load_model: a run's trained model, rebuilt from its folder."""

import numpy as np
import pytest

from tinygrok import runfiles
from tinygrok.tasks import make_task, split
from tinygrok.train import TrainConfig, evaluate, train
from tinygrok.trained_model import load_model

TINY = TrainConfig(task="x_plus_y", p=7, steps=40, batch_size=16, d_model=8, heads=2,
                   layers=2, log_every=5, probe_size=3, embed_every=10, checkpoint_every=15)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TINY, out)
    return out


def test_the_loaded_model_is_the_one_the_run_ended_with(run_dir):
    model, step = load_model(run_dir)
    assert step == TINY.steps
    # It scores the validation split exactly as the run's last log did...
    task = make_task(TINY.task, TINY.p)
    _, val_idx = split(task, TINY.train_frac, TINY.seed)
    val_loss, val_acc = evaluate(model, task.inputs[val_idx], task.labels[val_idx], 8192)
    last = runfiles.read_csv(run_dir / "metrics.csv")[-1]
    assert last["step"] == TINY.steps
    assert (val_loss, val_acc) == (last["val_loss"], last["val_acc"])
    # ...and attends to the probes as the run's last attention snapshot (stored in float16).
    saved = runfiles.read_npz(run_dir / "attention.npz")
    _, patterns = model(saved["probe_inputs"], return_attention=True)
    for layer, pattern in enumerate(patterns):  # (N, H, T, T) here, (H, N, T, T) stored
        np.testing.assert_allclose(pattern.transpose(1, 0, 2, 3), saved["patterns"][-1, layer],
                                   atol=1e-3)


def test_a_folder_without_a_checkpoint_or_with_a_damaged_one_is_named(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no config.json: it is not a run's"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")  # not a run's: it used to build a default model
    (tmp_path / "checkpoint.npz").write_bytes((run_dir / "checkpoint.npz").read_bytes())
    with pytest.raises(ValueError, match="names no task and version"):
        load_model(tmp_path)
    (tmp_path / "checkpoint.npz").unlink()
    (tmp_path / "config.json").write_bytes((run_dir / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="holds no checkpoint.npz"):
        load_model(tmp_path)
    (tmp_path / "checkpoint.npz").write_bytes((run_dir / "checkpoint.npz").read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot load the model of .*damaged"):
        load_model(tmp_path)


def test_the_step_is_the_checkpoints_not_the_runs_budget(tmp_path):
    """An unfinished run's checkpoint is from before its last step (a mutant that returned
    config.steps passed, since the only other test loads a finished run)."""
    train(TrainConfig(task="x_plus_y", p=7, steps=10, batch_size=8, d_model=8, heads=2,
                      layers=1, log_every=5, probe_size=2), tmp_path)
    arrays = runfiles.read_npz(tmp_path / "checkpoint.npz")
    arrays["step"] = np.array(5)
    runfiles.write_npz(tmp_path / "checkpoint.npz", **arrays)
    assert load_model(tmp_path)[1] == 5
