"""Sparse kernels against the dense masked path for masked Linear layers, in one process.

    PYTHONPATH=src python bench/sparse_kernels.py [--repeats 5] [--iterations 300] [--threads 1]
        [--only ladder|crossover|phases|native] [--models lenet300_100 mlp_1000]

Training step: the real `Trainer` on mnist5k, lth-lenet's settings (Adam 1.2e-3, batch 60),
`constraint=MaskedTraining(model, mask, kernels)` with kernels dense (the masked path every
lottery tool uses), sparse (every masked Linear on sparse kernels: models/sparse_linear.py)
and auto (the rule in sparsity/kernels.py); the time is `Trainer.wall_time` over the
iterations (forward, loss, backward, masking, optimiser step; evaluations cut to one batch
and not timed). Masks are
random with the lottery's per-layer fractions: at IMP level L of lth-lenet, 0.8^L of each
hidden layer and 0.9^L of the output layer (levels 0, 3, 7, 11, 15, 18, 20: 100, 51.3, 21.1, 8.7,
3.6, 1.9, 1.2% of the weights); mlp_1000 (784-1000-1000-500-200-10) at 10, 5, 2 and 1% of every layer.

Inference: the model in eval mode under inference_mode at batch 1 and 64, masked dense against
the same weights on sparse kernels (kernels=sparse) and on auto's choice.

Phases (--only phases): Trainer.run's loop body for LeNet at level 15, timed phase by phase
per kernels: where a step's time goes.

Crossover: one Linear layer of each shape alone, forward and both gradients (as in training
inside a network) at batch 60, dense masked against SparseLinear over kept fractions; the
largest fraction at which the sparse layer is still faster, per shape (auto's rule comes from it).

Native (--only native): the sparse layer alone as in the crossover, on its C kernels
(models/native.py) against PyTorch's sparse operations (what runs where the C kernels cannot be
built), at the kept fractions of lth-lenet's levels 11, 15 and 20 and mlp_1000's 5% and 1%.

Each repeat runs the variants in turn after an untimed warm-up round; the report gives each
variant's median time and the median over repeats of dense/variant (pairing neighbours in
time cancels drifts in machine load).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ticketlab.config import KERNELS, DataConfig, ModelConfig, TrainConfig
from ticketlab.data import Dataset, Split, load_data
from ticketlab.models import build_model
from ticketlab.models import native
from ticketlab.models.native import native_status
from ticketlab.models.sparse_linear import SparseLinear
from ticketlab.sparsity.kernels import sparse_layers, use_kernels
from ticketlab.sparsity.mask import Mask, prunable_names
from ticketlab.sparsity.masked import MaskedTraining
from ticketlab.training.loop import Trainer

LENET_LEVELS = (0, 3, 7, 11, 15, 18, 20)
MLP1000_KEPT = (0.10, 0.05, 0.02, 0.01)
MODELS = ("lenet300_100", "mlp_1000")
FRACTIONS = (0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.02)


def model_of(name: str, data: Dataset) -> nn.Module:
    return build_model(ModelConfig(name=name), data.input_shape, data.num_classes,
                       generator=torch.Generator().manual_seed(0))


def random_mask(model: nn.Module, kept: dict[str, float]) -> Mask:
    """Each prunable weight keeps its fraction `kept[name]`, drawn at random (exact counts)."""
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for name in prunable_names(model):
        numel = params[name].numel()
        flat = torch.zeros(numel, dtype=torch.bool)
        flat[torch.randperm(numel, generator=generator)[:max(1, round(kept[name] * numel))]] = True
        tensors[name] = flat.view_as(params[name])
    return Mask(tensors)


def lenet_level(model: nn.Module, level: int) -> dict[str, float]:
    names = prunable_names(model)
    return {name: (0.9 if name == names[-1] else 0.8) ** level for name in names}


def step_ms(model_name: str, kept: Callable[[nn.Module], dict[str, float]], kernels: str, data: Dataset,
            cfg: TrainConfig) -> float:
    model = model_of(model_name, data)
    mask = random_mask(model, kept(model))
    mask.apply(model)
    trainer = Trainer(model, data, cfg, progress=False, constraint=MaskedTraining(model, mask, kernels))
    trainer.run()
    return 1e3 * trainer.wall_time / trainer.schedule.total


def timed(call: Callable[[], object], seconds: float = 0.2) -> float:
    """Milliseconds per call: repeated for about `seconds` after a warm-up."""
    for _ in range(3):
        call()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        calls += 1
    return 1e3 * (time.perf_counter() - start) / calls


def inference_ms(model_name: str, kept: Callable[[nn.Module], dict[str, float]], kernels: str, data: Dataset,
                 batch: int) -> float:
    model = model_of(model_name, data)
    mask = random_mask(model, kept(model))
    mask.apply(model)
    use_kernels(model, mask, kernels)
    model.eval()
    x = data.test.x[:batch]
    with torch.inference_mode():
        return timed(lambda: model(x))


def paired(measure: Callable[[str], float], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in KERNELS}
    for repeat in range(repeats + 1):
        for kernels in KERNELS:
            value = measure(kernels)
            if repeat:  # round 0 warms up
                times[kernels].append(value)
    return times


def ratio(times: dict[str, list[float]], kernels: str) -> float:
    return statistics.median(d / v for d, v in zip(times["dense"], times[kernels]))


def ladder(data: Dataset, cfg: TrainConfig, repeats: int, models: Sequence[str] = MODELS) -> None:
    cases = [("lenet300_100", f"level {level}", lambda m, level=level: lenet_level(m, level))
             for level in LENET_LEVELS]
    cases += [("mlp_1000", f"{100 * f:g}% each", lambda m, f=f: {n: f for n in prunable_names(m)})
              for f in MLP1000_KEPT]
    cases = [case for case in cases if case[0] in models]
    print(f"training step (ms; Adam, batch 60, {cfg.steps}) and inference (ms; batch 1 / 64), "
          f"{torch.get_num_threads()} thread(s), median of {repeats}; ratios are dense / variant")
    print("| model | mask | kept | auto's sparse layers | step dense | step sparse | ratio | step auto | ratio "
          "| infer b1 dense / sparse / auto | ratios | infer b64 dense / sparse / auto | ratios |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for model_name, label, kept in cases:
        model = model_of(model_name, data)
        mask = random_mask(model, kept(model))
        auto = ", ".join(sparse_layers(model, mask, "auto")) or "none"
        steps = paired(lambda k: step_ms(model_name, kept, k, data, cfg), repeats)
        infer = {b: paired(lambda k: inference_ms(model_name, kept, k, data, b), repeats) for b in (1, 64)}
        med = {k: statistics.median(v) for k, v in steps.items()}
        cells = [" / ".join(f"{statistics.median(infer[b][k]):.3f}" for k in KERNELS)
                 + f" | {ratio(infer[b], 'sparse'):.2f}×, {ratio(infer[b], 'auto'):.2f}×" for b in (1, 64)]
        print(f"| {model_name} | {label} | {100 * mask.kept() / mask.total():.1f}% | {auto} | {med['dense']:.3f} "
              f"| {med['sparse']:.3f} | {ratio(steps, 'sparse'):.2f}× "
              f"| {med['auto']:.3f} | {ratio(steps, 'auto'):.2f}× "
              f"| {' | '.join(cells)} |", flush=True)


def phases(data: Dataset, cfg: TrainConfig, level: int = 15) -> None:
    """Where a training step of LeNet at IMP level `level` goes, per kernels: Trainer.run's loop
    body, timed phase by phase (µs per step over cfg.steps after one untimed epoch)."""
    names = ("gather", "forward", "zero_grad", "backward", "masking", "optimiser", "bookkeeping")
    print(f"\nphases of a LeNet step at level {level} (µs per step; Adam, batch 60)")
    print("| kernels | " + " | ".join(names) + " | total |")
    print("| --- | " + " | ".join("---" for _ in names) + " | --- |")
    for kernels in KERNELS:
        model = model_of("lenet300_100", data)
        mask = random_mask(model, lenet_level(model, level))
        mask.apply(model)
        constraint = MaskedTraining(model, mask, kernels)
        trainer = Trainer(model, data, cfg, progress=False, constraint=constraint)
        optimizer, x_all, y_all = trainer.optimizer, data.train.x, data.train.y
        seconds = [0.0] * len(names)
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        steps, per_epoch, batch = trainer.schedule.total, trainer.schedule.iterations_per_epoch, cfg.batch_size
        order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(0))
        for step in range(per_epoch + steps):
            index = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
            marks = [time.perf_counter()]
            x, y = x_all.index_select(0, index), y_all.index_select(0, index)
            marks.append(time.perf_counter())
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            marks.append(time.perf_counter())
            optimizer.zero_grad(set_to_none=True)
            marks.append(time.perf_counter())
            loss.backward()
            marks.append(time.perf_counter())
            constraint.before_step()
            marks.append(time.perf_counter())
            optimizer.step()
            marks.append(time.perf_counter())
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            marks.append(time.perf_counter())
            if step >= per_epoch:  # the first epoch warms up
                for k in range(len(names)):
                    seconds[k] += marks[k + 1] - marks[k]
        cells = [f"{1e6 * s / steps:.0f}" for s in seconds]
        print(f"| {kernels} | " + " | ".join(cells) + f" | {1e6 * sum(seconds) / steps:.0f} |", flush=True)


def layer_step(linear: nn.Module, x: torch.Tensor, keep: torch.Tensor | None) -> Callable[[], None]:
    """One forward and backward (input and weight gradients) of `linear`; dense ones masked by `keep`."""
    x = x.clone().requires_grad_()

    def step() -> None:
        x.grad = None
        for p in linear.parameters():
            p.grad = None
        linear(x).sum().backward()
        if keep is not None:
            linear.weight.grad.mul_(keep)
    return step


def crossover(repeats: int) -> None:
    shapes = [(784, 300), (300, 100), (100, 10), (784, 1000), (1000, 1000), (1000, 500), (500, 200), (200, 10)]
    print(f"\ncrossover: one layer's forward + backward at batch 60, dense masked / sparse, median of {repeats}")
    print("| layer | weights | " + " | ".join(f"{100 * f:g}%" for f in FRACTIONS) + " | sparse faster up to |")
    print("| --- | --- | " + " | ".join("---" for _ in FRACTIONS) + " | --- |")
    generator = torch.Generator().manual_seed(0)
    for n_in, n_out in shapes:
        ratios = []
        for fraction in FRACTIONS:
            linear = nn.Linear(n_in, n_out)
            keep = torch.rand(n_out, n_in, generator=generator) < fraction
            with torch.no_grad():
                linear.weight.mul_(keep)
            x = torch.randn(60, n_in, generator=generator)
            dense, sparse = layer_step(linear, x, keep), layer_step(SparseLinear(linear, keep), x, None)
            pairs = [(timed(dense, 0.1), timed(sparse, 0.1)) for _ in range(repeats)]
            ratios.append(statistics.median(d / s for d, s in pairs))
        faster = [f for f, r in zip(FRACTIONS, ratios) if r > 1]
        print(f"| {n_in}→{n_out} | {n_in * n_out:,} | " + " | ".join(f"{r:.2f}×" for r in ratios)
              + (f" | {100 * max(faster):g}% |" if faster else " | never |"), flush=True)


@contextlib.contextmanager
def pytorch_ops():
    """SparseLinear on PyTorch's sparse operations, as where the C kernels cannot be built."""
    built = native._load
    native._load = lambda: (None, f"${native.DISABLE}=0")
    try:
        yield
    finally:
        native._load = built


def native_against_pytorch(repeats: int) -> None:
    cases = [((784, 300), f) for f in (0.8 ** 11, 0.8 ** 15, 0.8 ** 20)] + [((300, 100), 0.8 ** 15)]
    cases += [((1000, 1000), f) for f in (0.05, 0.01)]
    print(f"\nnative: one sparse layer's forward + backward at batch 60 (ms), PyTorch's operations / C kernels, "
          f"median of {repeats}; {native_status()}")
    print("| layer | kept | PyTorch ops | C kernels | ratio |")
    print("| --- | --- | --- | --- | --- |")
    generator = torch.Generator().manual_seed(0)
    for (n_in, n_out), fraction in cases:
        keep = torch.rand(n_out, n_in, generator=generator) < fraction
        layer = SparseLinear(nn.Linear(n_in, n_out), keep)
        step = layer_step(layer, torch.randn(60, n_in, generator=generator), None)
        pairs = []
        for _ in range(repeats):
            with pytorch_ops():
                slow = timed(step, 0.2)
            pairs.append((slow, timed(step, 0.2)))
        print(f"| {n_in}→{n_out} | {100 * fraction:.1f}% | {statistics.median(p for p, _ in pairs):.3f} "
              f"| {statistics.median(c for _, c in pairs):.3f} | {statistics.median(p / c for p, c in pairs):.2f}× |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", choices=("ladder", "crossover", "phases", "native"), default=None)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS, help="the ladder's models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"sparse layers run on {native_status()}")
    if args.only in (None, "native"):
        native_against_pytorch(args.repeats)
    if args.only in (None, "crossover"):
        crossover(args.repeats)
    if args.only in (None, "ladder", "phases"):
        data = load_data(DataConfig(name="mnist5k"))
        one_batch = Split(data.test.x[:64], data.test.y[:64])
        data = dataclasses.replace(data, val=one_batch, test=one_batch)
        cfg = TrainConfig(steps=f"{args.iterations}it", optimizer="adam", lr=1.2e-3, batch_size=60, save_at="")
        if args.only == "phases":
            phases(data, cfg)
        else:
            ladder(data, cfg, args.repeats, args.models)


if __name__ == "__main__":
    main()
