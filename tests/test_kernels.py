"""Sparse kernels (models.sparse_linear, sparsity.kernels): the same function, gradients and training
as the dense masked path, to float rounding; pruned weights zero by construction; dense files."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.analysis.sweep import sweep
from ticketlab.config import DataConfig, LotteryConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import Dataset, load_data
from ticketlab.lottery.experiment import run_lottery
from ticketlab.models import build_model
from ticketlab.models import native
from ticketlab.models.sparse_linear import CSR_BELOW_BATCH, SparseLinear, trained_parameter
from ticketlab.sparsity.kernels import AUTO_MAX_DENSITY, AUTO_MIN_WEIGHTS, densify, sparse_layers, use_kernels
from ticketlab.sparsity.mask import Mask, prunable_names
from ticketlab.sparsity.masked import MaskedTraining, masked_fit
from ticketlab.training.loop import Trainer
from ticketlab.training.optim import NativeAdam
from ticketlab.training.stage import check_runtime, train

TOLERANCE = 1e-5  # float32 sums of up to 784 terms in another order


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data(DataConfig(name="digits"))


def lenet(data: Dataset, bias: bool = True) -> nn.Module:
    return build_model(ModelConfig(name="lenet300_100", bias=bias), data.input_shape, data.num_classes,
                       generator=torch.Generator().manual_seed(0))


def random_mask(model: nn.Module, kept: float, seed: int = 1) -> Mask:
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    return Mask({name: torch.rand(params[name].shape, generator=generator) < kept for name in prunable_names(model)})


def layer_pair(keep: torch.Tensor, bias: bool = True) -> tuple[nn.Linear, SparseLinear]:
    torch.manual_seed(0)
    linear = nn.Linear(keep.shape[1], keep.shape[0], bias=bias)
    with torch.no_grad():
        linear.weight.mul_(keep)
    return linear, SparseLinear(linear, keep)


def kept_at_random(fraction: float, seed: int) -> torch.Tensor:
    return torch.rand(30, 40, generator=torch.Generator().manual_seed(seed)) < fraction


KEEPS = {
    "random 10%": lambda: kept_at_random(0.1, 2),
    "random 60%": lambda: kept_at_random(0.6, 3),
    "an all-pruned row and column": lambda: _emptied(kept_at_random(0.3, 4)),
    "all kept": lambda: torch.ones(30, 40, dtype=torch.bool),
    "all pruned": lambda: torch.zeros(30, 40, dtype=torch.bool),
}


def _emptied(keep: torch.Tensor) -> torch.Tensor:
    keep[7] = False
    keep[:, 11] = False
    return keep


def built_kernels() -> native.NativeKernels:
    """The C kernels; the test skipped where they cannot be here, failed where they should build."""
    kernels = native.native_kernels()
    if kernels is None:
        if native.native_status().endswith("=0") or native._compiler() is None:
            pytest.skip(f"the C kernels are not here: {native.native_status()}")
        pytest.fail(f"the C kernels did not build: {native.native_status()}")
    return kernels


@pytest.fixture(params=["native", "pytorch"])
def implementation(request, monkeypatch):
    """Each layer test on both implementations: the C kernels, and PyTorch's operations (where
    the C kernels cannot be built). With a C compiler here they must build (.ci/run installs one)."""
    if request.param == "native":
        built_kernels()
    else:
        monkeypatch.setattr(native, "_load", lambda: (None, f"${native.DISABLE}=0"))
    return request.param


@pytest.mark.parametrize("case", KEEPS)
@pytest.mark.parametrize("bias", [True, False])
# 1, 3, CSR_BELOW_BATCH: MKL's CSR products and embedding_bag; 8, 60: whole and padded vectors of 8 in C
@pytest.mark.parametrize("batch", [1, 3, 8, CSR_BELOW_BATCH, 60])
def test_forward_and_both_gradients_equal_the_dense_masked_layer(case, bias, batch, implementation):
    keep = KEEPS[case]()
    linear, sparse = layer_pair(keep, bias)
    x = torch.randn(batch, 40, generator=torch.Generator().manual_seed(5))
    x_dense, x_sparse = x.clone().requires_grad_(), x.clone().requires_grad_()
    target = torch.randn(batch, 30, generator=torch.Generator().manual_seed(6))
    F.mse_loss(linear(x_dense), target).backward()
    out = sparse(x_sparse)
    F.mse_loss(out, target).backward()
    assert torch.allclose(out, linear(x), atol=TOLERANCE)
    assert torch.allclose(x_sparse.grad, x_dense.grad, atol=TOLERANCE)
    assert sparse.values.shape == (int(keep.sum()),)
    dense_grad = torch.zeros(keep.numel()).index_put((sparse.flat,), sparse.values.grad).view_as(keep)
    assert torch.allclose(dense_grad, linear.weight.grad * keep, atol=TOLERANCE)
    assert torch.equal(sparse.weight.detach(), linear.weight.detach())
    if bias:
        assert sparse.bias is linear.bias
        bias_grad = linear.bias.grad.clone()
        linear.bias.grad = None
        F.mse_loss(linear(x), target).backward()
        assert torch.allclose(bias_grad, 2 * linear.bias.grad, atol=TOLERANCE)  # both layers' gradients, equal
    with torch.inference_mode():  # the product without autograd agrees too
        assert torch.allclose(sparse(x), linear(x), atol=TOLERANCE)
        assert sparse(x.view(batch, 1, 40)).shape == (batch, 1, 30)


def test_inputs_and_gradients_of_any_layout_give_the_same_results(implementation):
    """Transposed, strided and broadcast inputs, an empty batch, and a gradient broadcast from a sum."""
    keep = KEEPS["random 10%"]()
    linear, sparse = layer_pair(keep)
    base = torch.randn(40, 70, generator=torch.Generator().manual_seed(8))
    for x in (base.t(), base.t()[::2], base[:1].t().expand(70, 40)[:, :].contiguous()[:5], base.t()[:0]):
        assert torch.allclose(sparse(x), linear(x), atol=TOLERANCE)
    x_dense, x_sparse = base.t().clone().requires_grad_(), base.t().clone().requires_grad_()
    linear(x_dense).sum().backward()
    sparse(x_sparse).sum().backward()  # the output's gradient: a ones tensor of stride 0
    assert torch.allclose(x_sparse.grad, x_dense.grad, atol=TOLERANCE)


@pytest.mark.parametrize("bias", [True, False])
# Every layer sparse; a small dense layer in the one-call chain; large dense layers, run layer by layer.
@pytest.mark.parametrize("kernels", ["sparse", ("fc1", "fc2"), ("fc1",), ("fc2",)])
@pytest.mark.parametrize("batch", [1, 13, 64])
def test_an_mlp_runs_its_chain_as_one_operation_with_the_dense_masked_function_and_gradients(
        digits, bias, kernels, batch, implementation):
    dense = lenet(digits, bias)
    mask = random_mask(dense, 0.1)
    mask.apply(dense)
    sparse = lenet(digits, bias)
    mask.apply(sparse)
    use_kernels(sparse, mask, kernels if kernels == "sparse" else list(kernels))
    x = digits.train.x[:batch].clone().requires_grad_()
    x_dense = x.detach().clone().requires_grad_()
    out = sparse(x)
    function = type(out.grad_fn).__name__
    if implementation == "native":  # the one-call chain unless a dense layer has over SMALL_DENSE weights
        one_call = kernels in ("sparse", ("fc1", "fc2"))
        assert function == ("_NativeChainFunctionBackward" if one_call else "_LayerByLayerFunctionBackward")
    else:  # PyTorch's operations: the layers one by one
        assert "Chain" not in function and "LayerByLayer" not in function
    F.cross_entropy(out, digits.train.y[:batch]).backward()
    reference = dense(x_dense)
    F.cross_entropy(reference, digits.train.y[:batch]).backward()
    assert torch.allclose(out, reference, atol=TOLERANCE)
    assert torch.allclose(x.grad, x_dense.grad, atol=TOLERANCE)
    for name, param in dense.named_parameters():
        trained, keep = trained_parameter(sparse, name), mask.get(name)
        grad, got = param.grad, trained.grad
        if trained.shape != param.shape:  # a SparseLinear's values: the gradient at kept entries only
            grad = grad.flatten()[sparse.get_submodule(name.rpartition(".")[0]).flat]
        elif keep is not None:  # a dense layer's: masked later, by MaskedTraining
            grad, got = grad * keep, got * keep
        assert torch.allclose(got, grad, atol=TOLERANCE), name
    with torch.inference_mode():
        assert torch.allclose(sparse(x), dense(x), atol=TOLERANCE)


@pytest.mark.parametrize("kernels", ["sparse", ("fc1",)])  # the one-call chain, and layer by layer
def test_a_gradient_of_the_chains_gradient_is_refused_not_wrong(digits, kernels):
    built_kernels()
    model = lenet(digits)
    mask = random_mask(model, 0.1)
    mask.apply(model)
    use_kernels(model, mask, kernels if kernels == "sparse" else list(kernels))
    x = digits.train.x[:4].clone().requires_grad_()
    (grad_x,) = torch.autograd.grad(model(x).pow(2).sum(), x, create_graph=True)  # its gradient depends on x
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_x.sum().backward()


def test_the_c_kernels_are_built_once_and_a_failed_build_is_said_and_leaves_pytorch_running(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "_load", native._load.__wrapped__)  # uncached: each call builds or finds
    if native._compiler() is None:
        pytest.skip("no C compiler here")
    assert native.native_kernels() is not None
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    assert native.native_kernels() is not None and built[0].stat().st_mtime_ns == stamp  # found, not rebuilt
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    monkeypatch.setattr(native, "COMPILERS", ())
    assert native.native_kernels() is None
    assert native.native_status().startswith("PyTorch's sparse operations: the C kernels did not build with ")
    monkeypatch.setenv(native.DISABLE, "0")
    assert native.native_status() == f"PyTorch's sparse operations: ${native.DISABLE}=0"


def test_the_state_dict_is_nn_linears_dense_one_and_loads_at_the_pattern():
    keep = KEEPS["random 10%"]()
    linear, sparse = layer_pair(keep)
    state = sparse.state_dict()
    assert list(state) == list(linear.state_dict()) == ["weight", "bias"]
    assert torch.equal(state["weight"], linear.weight.detach())
    other = SparseLinear(nn.Linear(40, 30), keep)
    noisy = {"weight": torch.randn(30, 40), "bias": torch.zeros(30)}
    other.load_state_dict(noisy)
    assert torch.equal(other.weight.detach(), noisy["weight"] * keep)  # outside the pattern: pruned, dropped
    with pytest.raises(RuntimeError):  # a weight of another shape is refused as nn.Linear would refuse it
        other.load_state_dict({"weight": torch.randn(30, 41), "bias": torch.zeros(30)})


def test_auto_chooses_large_layers_kept_at_most_the_crossover_and_never_a_conv(implementation):
    data = load_data(DataConfig(name="smoke-mnist"))
    model = build_model(ModelConfig(name="lenet300_100"), data.input_shape, data.num_classes)
    sparse_fc1 = random_mask(model, AUTO_MAX_DENSITY / 2)
    assert model.fc1.weight.numel() >= AUTO_MIN_WEIGHTS > model.fc2.weight.numel()
    # fc2, fc3 too small to gain alone; in the MLP's fused chain on the C kernels, not
    expected = ["fc1", "fc2", "fc3"] if implementation == "native" else ["fc1"]
    assert sparse_layers(model, sparse_fc1, "auto") == expected
    assert sparse_layers(model, sparse_fc1, "sparse") == ["fc1", "fc2", "fc3"]
    assert sparse_layers(model, sparse_fc1, "dense") == []
    assert sparse_layers(model, random_mask(model, 2 * AUTO_MAX_DENSITY), "auto") == []
    assert sparse_layers(model, Mask.ones(model), "sparse") == []  # nothing pruned: nothing to gain
    conv = build_model(ModelConfig(name="conv2"), data.input_shape, data.num_classes)
    chosen = sparse_layers(conv, random_mask(conv, 0.01), "sparse")
    assert chosen and all(isinstance(conv.get_submodule(name), nn.Linear) for name in chosen)


def test_unknown_kernels_are_refused_in_one_line():
    with pytest.raises(TicketlabError, match="unknown kernels 'fast': expected one of dense, sparse, auto"):
        check_runtime(Runtime(kernels="fast"))


OPTIMIZERS = {
    "adam_wd": dict(optimizer="adam", lr=1e-3, weight_decay=5e-4),
    "sgd_momentum_wd": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adadelta_l2": dict(optimizer="adadelta", lr=1.0, l2=1e-4),
    "sgd_l1": dict(optimizer="sgd", lr=0.05, l1=1e-4),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_whole_training_run_matches_the_dense_masked_path(digits, optimizer):
    cfg = TrainConfig(steps="3ep", batch_size=32, save_at="", **OPTIMIZERS[optimizer])
    mask = random_mask(lenet(digits), 0.1)
    runs = {}
    for kernels in ("dense", "sparse"):
        model = lenet(digits)
        mask.apply(model)
        trainer = Trainer(model, digits, cfg, progress=False, constraint=MaskedTraining(model, mask, kernels))
        summary = trainer.run()
        runs[kernels] = (model.state_dict(), summary, trainer)
    (dense_state, dense, _), (sparse_state, sparse, trainer) = runs["dense"], runs["sparse"]
    # Adam's step in C for a model on sparse kernels, where they are built
    assert isinstance(trainer.optimizer, NativeAdam) == (
        optimizer.startswith("adam") and native.native_kernels() is not None)
    assert sparse["sparse_layers"] == ["fc1", "fc2", "fc3"] and dense["sparse_layers"] == []
    for name, weight in sparse_state.items():
        assert torch.allclose(weight, dense_state[name], rtol=1e-3, atol=1e-4), name
        if name in mask:
            assert int(weight[~mask[name]].count_nonzero()) == 0  # pruned: exactly zero
    for dense_row, sparse_row in zip(compared_metrics(dense), compared_metrics(sparse)):
        assert sparse_row == pytest.approx(dense_row, rel=1e-3, abs=1e-4)
    if optimizer == "sgd_l1":
        return  # plain SGD keeps no state
    # The optimiser holds state for the kept weights only.
    shapes = {tuple(v.shape) for state in trainer.optimizer.state.values() for v in state.values()
              if torch.is_tensor(v) and v.dim()}
    assert (int(mask["fc1.weight"].sum()),) in shapes and (300, 64) not in shapes


def test_native_adam_takes_adams_steps_and_shares_its_state():
    """Adam's step in C: torch.optim.Adam's numbers to float rounding, through changing learning
    rates and skipped parameters; a pruned entry (zero, with zero gradients) stays exactly zero;
    the state loads into torch's Adam and back."""
    kernels = built_kernels()
    generator = torch.Generator().manual_seed(3)
    shapes = [(300,), (7, 5), (1,)]
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    start[0][:40] = 0.0  # "pruned": zero, and their gradients zero below
    ours = [nn.Parameter(t.clone()) for t in start]
    theirs = [nn.Parameter(t.clone()) for t in start]
    native_adam = NativeAdam(ours, kernels, lr=1e-2, weight_decay=5e-4)
    adam = torch.optim.Adam(theirs, lr=1e-2, weight_decay=5e-4, fused=True)

    def steps(count: int, first: int) -> None:
        for step in range(first, first + count):
            for optimizer, params in ((native_adam, ours), (adam, theirs)):
                optimizer.zero_grad()
                optimizer.param_groups[0]["lr"] = 1e-2 / (1 + step)
                for i, param in enumerate(params):
                    if i == 2 and step % 3 == 0:
                        continue  # no gradient: not stepped
                    grad = torch.randn(param.shape, generator=torch.Generator().manual_seed(100 * step + i))
                    if i == 0:
                        grad[:40] = 0.0
                    param.grad = grad
                optimizer.step()
            for mine, reference in zip(ours, theirs):
                assert torch.allclose(mine, reference, rtol=1e-5, atol=1e-6)

    steps(20, 0)
    assert int(ours[0][:40].count_nonzero()) == 0
    assert float(native_adam.state[ours[2]]["step"]) == float(adam.state[theirs[2]]["step"]) == 13
    # Each resumes from the other's state (copied: a state_dict holds the optimiser's own tensors).
    mine, reference = copy.deepcopy(native_adam.state_dict()), copy.deepcopy(adam.state_dict())
    native_adam.load_state_dict(reference)
    adam.load_state_dict(mine)
    steps(5, 20)
    with pytest.raises(TicketlabError, match="no closure"):
        native_adam.step(lambda: 0.0)


def compared_metrics(summary: dict) -> list[list[float]]:
    return [[summary[which][key] for key in ("train_loss", "val_loss", "val_acc")] for which in ("best", "final")]


def test_masked_fit_with_sparse_kernels_leaves_dense_looking_layers(digits):
    model = lenet(digits)
    mask = random_mask(model, 0.05)
    masked_fit(model, digits, TrainConfig(steps="20it", save_at=""), mask, kernels="sparse", progress=False)
    assert isinstance(model.fc1, SparseLinear) and model.fc1.weight.shape == (300, 64)
    logits = model(digits.test.x[:8])
    densify(model)
    assert type(model.fc1) is nn.Linear and torch.allclose(model(digits.test.x[:8]), logits, atol=TOLERANCE)
    assert all(int(p[~mask[n]].count_nonzero()) == 0 for n, p in model.named_parameters() if n in mask)


def test_a_resume_with_other_kernels_is_refused_and_loses_nothing(digits, tmp_path):
    cfg = TrainConfig(steps="4ep", save_at="")
    mask = random_mask(lenet(digits), 0.05)

    class Stop(Exception):
        pass

    class StopAt:
        def __init__(self, epoch=None):
            self.epoch = epoch

        def on_epoch_end(self, epoch, model):
            if epoch == self.epoch:
                raise Stop
            return False

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    def trainer(kernels, stop_at=None):
        model = lenet(digits)
        return Trainer(model, digits, cfg, tmp_path, progress=False, constraint=MaskedTraining(model, mask, kernels),
                       callbacks=[StopAt(stop_at)])

    with pytest.raises(Stop):
        trainer("sparse", stop_at=2).run()
    written = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(TicketlabError, match="started with fc1, fc2, fc3 on sparse kernels and would resume with "
                                             "none; resume it with the --kernels it started with"):
        trainer("dense").run()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == written
    summary = trainer("sparse").run()
    assert summary["final"]["epoch"] == 4


def test_a_short_lottery_finds_the_same_tickets_on_either_kernels(tmp_path):
    data, model, training = DataConfig(name="digits"), ModelConfig(name="lenet300_100"), TrainConfig(steps="2ep")
    lottery = LotteryConfig(levels=3, rate=0.6)  # 40%, 16%, 6.4% of the weights
    results = {}
    for kernels in ("dense", "sparse"):
        runtime = Runtime(runs_dir=str(tmp_path / kernels), progress=False, kernels=kernels)
        results[kernels] = run_lottery(data, model, training, lottery, runtime=runtime).lotteries[0].levels
    for dense, sparse in zip(results["dense"], results["sparse"]):
        if dense.number:
            assert dense.retrained.run.name == sparse.retrained.run.name  # kernels are not in a run's identity
            dense_mask, sparse_mask = dense.retrained.mask(), sparse.retrained.mask()
            assert 1 - dense_mask.hamming(sparse_mask) / dense_mask.total() >= 0.999
            assert sparse.summary["sparse_layers"] == ["fc1", "fc2", "fc3"]
        assert sparse.summary["best"]["test_acc"] == pytest.approx(dense.summary["best"]["test_acc"], abs=0.01)


def test_a_sweep_evaluated_on_sparse_kernels_gives_the_dense_table(tmp_path):
    runtime = Runtime(runs_dir=str(tmp_path), progress=False, kernels="dense")
    run = train(DataConfig(name="digits"), ModelConfig(name="lenet300_100"), TrainConfig(steps="2ep"), runtime)
    ks = (0.0, 0.9, 0.99)
    dense = sweep(run, ks, runtime=runtime).rows
    redone = sweep(run, ks, runtime=dataclasses.replace(runtime, kernels="sparse", force=True)).rows
    def layout(rows):
        return [(r["k"], r["method"], r["sparsity"]) for r in rows]

    assert layout(redone) == layout(dense)
    for sparse_row, dense_row in zip(redone, dense):
        assert sparse_row["test_acc"] == pytest.approx(dense_row["test_acc"], abs=2e-3)  # a near-tie may flip
        assert sparse_row["test_loss"] == pytest.approx(dense_row["test_loss"], rel=1e-4)


def test_an_interrupted_level_resumes_on_the_kernels_it_started_on(tmp_path, monkeypatch):
    data, model, training = DataConfig(name="digits"), ModelConfig(name="lenet300_100"), TrainConfig(steps="3ep")
    lottery = LotteryConfig(levels=1, rate=0.9)

    def level_one(kernels: str, where: str):
        runtime = Runtime(runs_dir=str(tmp_path / where), progress=False, kernels=kernels)
        return run_lottery(data, model, training, lottery, runtime=runtime).lotteries[0].level(1)

    clean = level_one("sparse", "clean")

    class Killed(Exception):
        pass

    save = Trainer._save_resume_point

    def save_then_die(trainer):
        save(trainer)
        if trainer.constraint is not None:  # the level's retraining, not the dense run
            raise Killed

    monkeypatch.setattr(Trainer, "_save_resume_point", save_then_die)
    with pytest.raises(Killed):
        level_one("sparse", "killed")
    monkeypatch.setattr(Trainer, "_save_resume_point", save)
    resumed = level_one("dense", "killed")  # asked for dense kernels, it continues on the sparse ones
    assert resumed.summary["sparse_layers"] == clean.summary["sparse_layers"] == ["fc1", "fc2", "fc3"]
    assert resumed.summary["final"]["val_loss"] == clean.summary["final"]["val_loss"]
