"""A user's own data: tensors, a torch Dataset or an .npz file become a Dataset by the built-in
sets' rules (a fixed test hold-out, a seeded validation split, training statistics only), train
through `fit`, `ticketlab train --dataset npz:PATH` and its cached stages, and name their runs by
their content."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import ticketlab as tl
from ticketlab.cli import main
from ticketlab.data import DataError


@pytest.fixture(scope="module")
def digits():
    found = load_digits()
    return found.images[:, None].astype(np.float32), found.target


def test_tensors_are_split_with_a_fixed_test_set_and_training_statistics(digits):
    x, y = digits
    data = tl.dataset_from(torch.from_numpy(x), torch.from_numpy(y))
    assert (len(data.train.y), len(data.val.y), len(data.test.y)) == (1295, 143, 359)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert abs(float(data.train.x.mean())) < 1e-5 and abs(float(data.train.x.std()) - 1) < 1e-3
    assert abs(float(data.test.x.mean())) > 1e-4  # normalised with the training part's statistics, not its own
    other = tl.dataset_from(x, y, split_seed=3)
    assert torch.equal(other.test.y, data.test.y) and not torch.equal(other.val.y, data.val.y)
    counts = torch.bincount(data.test.y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # a stratified fifth of each class


def test_a_torch_dataset_and_a_dataloader_give_the_same_data(digits):
    x, y = digits
    pairs = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    direct = tl.dataset_from(x, y)
    for source in (pairs, torch.utils.data.DataLoader(pairs, batch_size=7)):
        found = tl.dataset_from(source)
        assert torch.equal(found.train.x, direct.train.x) and torch.equal(found.test.y, direct.test.y)


def test_fit_takes_tensors_directly(digits):
    x, y = digits
    torch.manual_seed(0)  # the layers' initialisation, whatever tests ran before
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    summary = tl.fit(model, (torch.from_numpy(x), torch.from_numpy(y)), tl.TrainConfig(steps="3ep"), progress=False)
    assert summary["best"]["val_acc"] > 0.8


def test_an_npz_file_with_its_own_test_split_trains_through_the_cli(digits, tmp_path, capsys):
    x, y = digits
    path = tmp_path / "mine.npz"
    np.savez(path, x=x[:1500].astype(np.uint8), y=y[:1500], x_test=x[1500:].astype(np.uint8), y_test=y[1500:])
    data = tl.dataset_from(path)
    assert len(data.test.y) == 297 and data.name == "mine"
    argv = ["train", "--dataset", f"npz:{path}", "--model", "lenet300_100", "--steps", "1ep", "--runs-dir",
            str(tmp_path / "runs"), "--quiet", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert first["metrics"]["best"]["test_acc"] > 0.5
    np.savez(path, x=x[:1400].astype(np.uint8), y=y[:1400], x_test=x[1500:].astype(np.uint8), y_test=y[1500:])
    assert main(argv) == 0  # the same path, other content: other data, another run
    second = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert second["run_dir"] != first["run_dir"] and not second["cached"]


@pytest.mark.parametrize("arrays,message", [
    ({"a": np.zeros(3)}, "holds a; expected x and y"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(4), "x_test": np.zeros((2, 2))}, "optionally x_test with y_test"),
    ({"x": np.array([None] * 4, dtype=object), "y": np.zeros(4)}, "is not a readable .npz file"),
])
def test_a_bad_npz_file_is_a_one_line_error(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as info:
        tl.dataset_from(path)
    assert "\n" not in str(info.value)


def test_bad_arrays_are_one_line_errors(digits):
    x, y = digits
    with pytest.raises(DataError, match="labels are float64 with fractions"):
        tl.dataset_from(x, y + 0.5)
    with pytest.raises(DataError, match="label -1 out of range"):
        tl.dataset_from(x, np.where(y == 0, -1, y))
    with pytest.raises(DataError, match="inputs hold NaN"):
        tl.dataset_from(np.where(x > 10, np.nan, x), y)
    with pytest.raises(DataError, match=r"inputs \(1797, 1, 8, 8\) with labels \(5,\)"):
        tl.dataset_from(x, y[:5])
    with pytest.raises(DataError, match="expected an \\(input, label\\) pair"):
        tl.dataset_from(torch.utils.data.TensorDataset(torch.from_numpy(x)))


def test_the_cached_train_takes_in_memory_data_named_by_its_content(digits, tmp_path):
    x, y = digits
    runtime = tl.Runtime(runs_dir=str(tmp_path / "runs"), progress=False)
    model, steps = tl.ModelConfig(name="lenet300_100"), tl.TrainConfig(steps="1ep")
    run = tl.train((torch.from_numpy(x), torch.from_numpy(y)), model, steps, runtime)
    assert run.summary["best"]["val_acc"] > 0.5 and run.data.name.startswith("npz:")
    pairs = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    for same in ((x.copy(), y.copy()), pairs, torch.utils.data.DataLoader(pairs, batch_size=7)):
        again = tl.train(same, model, steps, runtime)
        assert again.run.name == run.run.name and again.cached
    assert len(list((tmp_path / "runs" / "data").iterdir())) == 1  # one file for one content
    changed = y.copy()
    changed[0] = (changed[0] + 1) % 10
    assert tl.train((x, changed), model, steps, runtime).run.name != run.run.name
    from ticketlab.config import PruneConfig
    from ticketlab.sparsity.prune import prune

    assert prune(run, PruneConfig(sparsity=0.5), runtime).summary["masked"]["test_acc"] > 0.3  # later stages read it
    assert tl.user_data((x, y), runtime.runs_dir) == run.data  # what the other stages take
    with pytest.raises(DataError, match="a split Dataset is for fit"):
        tl.train(tl.dataset_from(x, y), model, steps, runtime)
