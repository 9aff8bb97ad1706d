"""Sparse ticket files (sparsity.ticket_file) and `ticketlab export`: written in CSR form, reloaded
by ticketlab.load onto sparse kernels, equal to the masked network; ONNX for dense consumers."""

import json

import pytest
import torch
from torch import nn

import ticketlab
from ticketlab.cli import main
from ticketlab.config import DataConfig, LotteryConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import load_data
from ticketlab.lottery.experiment import run_lottery
from ticketlab.models import build_model
from ticketlab.models.native import native_kernels
from ticketlab.models.sparse_linear import SparseLinear
from ticketlab.sparsity.mask import Mask, prunable_names
from ticketlab.sparsity.ticket_file import save_ticket
from user_models import SharedLayer

TOLERANCE = 1e-5


def masked(name: str, kept: float, data) -> tuple[nn.Module, Mask, ModelConfig]:
    config = ModelConfig(name=name)
    model = build_model(config, data.input_shape, data.num_classes, generator=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(1)
    mask = Mask({n: torch.rand(params[n].shape, generator=generator) < kept for n in prunable_names(model)})
    mask.apply(model)
    return model.eval(), mask, config


@pytest.fixture(scope="module")
def mnist():
    return load_data(DataConfig(name="smoke-mnist"))


def test_a_ticket_reloads_on_sparse_kernels_and_equals_the_masked_network(mnist, tmp_path):
    model, mask, config = masked("lenet300_100", 0.036, mnist)
    path = tmp_path / "ticket.safetensors"
    save_ticket(model, path, mask, config)
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    assert path.stat().st_size < (tmp_path / "dense.pt").stat().st_size / 10
    x = mnist.test.x[:16]
    # auto: fc1 alone (fc2, fc3 too small to gain alone), or all three in the MLP's chain on the C kernels
    auto = ["fc1", "fc2", "fc3"] if native_kernels() is not None else ["fc1"]
    for kernels, expected in (("sparse", ["fc1", "fc2", "fc3"]), ("auto", auto), ("dense", [])):
        loaded = ticketlab.load(path, kernels=kernels)
        assert [n for n, m in loaded.named_modules() if isinstance(m, SparseLinear)] == expected
        assert not loaded.training
        with torch.inference_mode():
            assert torch.allclose(loaded(x), model(x), atol=TOLERANCE)
        state = loaded.state_dict()
        assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())


def test_the_pattern_is_the_masks_even_where_a_kept_weight_is_zero(mnist, tmp_path):
    model, mask, config = masked("lenet300_100", 0.05, mnist)
    row, col = mask["fc1.weight"].nonzero()[0].tolist()
    with torch.no_grad():
        model.fc1.weight[row, col] = 0.0
    save_ticket(model, tmp_path / "t.safetensors", mask, config)
    loaded = ticketlab.load(tmp_path / "t.safetensors", kernels="sparse")
    assert loaded.fc1.kept() == int(mask["fc1.weight"].sum())


def test_conv_weights_are_stored_sparse_and_reload_dense(mnist, tmp_path):
    model, mask, config = masked("conv2", 0.1, mnist)
    save_ticket(model, tmp_path / "conv.safetensors", mask, config)
    loaded = ticketlab.load(tmp_path / "conv.safetensors")
    assert isinstance(loaded.get_submodule(prunable_names(loaded)[0].rsplit(".", 1)[0]), nn.Conv2d)
    with torch.inference_mode():
        assert torch.allclose(loaded(mnist.test.x[:4]), model(mnist.test.x[:4]), atol=TOLERANCE)


def test_a_users_model_needs_its_factory_and_a_damaged_file_is_refused(tmp_path):
    model = SharedLayer().eval()
    mask = Mask({name: torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) < 0.3
                 for name, p in model.named_parameters() if name.endswith("weight")})
    mask.apply(model)
    path = tmp_path / "mine.safetensors"
    save_ticket(model, path, mask)
    with pytest.raises(TicketlabError, match="holds a user_models.SharedLayer; load it with ticketlab.load"):
        ticketlab.load(path)
    loaded = ticketlab.load(path, factory=SharedLayer, kernels="sparse")
    x = torch.randn(5, 12)
    assert torch.allclose(loaded(x), model(x), atol=TOLERANCE)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(TicketlabError, match="mine.safetensors"):
        ticketlab.load(path, factory=SharedLayer)
    with pytest.raises(TicketlabError, match="unknown kernels 'csr'"):
        ticketlab.load(path, kernels="csr")


def test_onnx_export_of_a_sparse_model_is_the_dense_network(mnist, tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the optional onnx package")
    model, mask, config = masked("lenet300_100", 0.036, mnist)
    save_ticket(model, tmp_path / "t.safetensors", mask, config)
    loaded = ticketlab.load(tmp_path / "t.safetensors", kernels="sparse")
    ticketlab.export_onnx(loaded, tmp_path / "t.onnx", mnist.input_shape)
    graph = onnx.load(str(tmp_path / "t.onnx"))
    onnx.checker.check_model(graph)
    shapes = {tuple(init.dims) for init in graph.graph.initializer}
    assert (300, 784) in shapes
    assert isinstance(loaded.fc1, SparseLinear)  # the model exported is a copy


def test_ticketlab_export_writes_a_lottery_levels_ticket(tmp_path, capsys):
    runtime = Runtime(runs_dir=str(tmp_path / "runs"), progress=False)
    (lottery,) = run_lottery(DataConfig(name="digits"), ModelConfig(name="lenet300_100"), TrainConfig(steps="1ep"),
                             LotteryConfig(levels=2, rate=0.7), runtime=runtime).lotteries
    level = lottery.level(2)
    out = tmp_path / "level2.safetensors"
    assert main(["export", "--run", level.retrained.run.name, "--runs-dir", runtime.runs_dir, "-o", str(out),
                 "--quiet", "--json"]) == 0
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert written["kept"] == level.retrained.mask().kept() and written["step"] == "best"
    loaded = ticketlab.load(out)
    best = level.retrained.state_dict("best")
    assert all(torch.equal(loaded.state_dict()[name], value) for name, value in best.items())
    assert main(["export", "--run", lottery.dense.run.name, "--runs-dir", runtime.runs_dir, "-o", str(out)]) == 2
    assert "is a train run; expected a level or control or ticket run" in capsys.readouterr().err
    assert main(["export", "--run", level.retrained.run.name, "--runs-dir", runtime.runs_dir,
                 "-o", str(tmp_path / "ticket.pt")]) == 2
    assert "expected a file name ending in .safetensors" in capsys.readouterr().err
    assert not (tmp_path / "ticket.pt").exists()
