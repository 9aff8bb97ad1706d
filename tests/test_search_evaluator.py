import copy

import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig, TicketlabError, TrainConfig
from ticketlab.models import MODELS, build_model
from ticketlab.models.sparse_linear import SparseLinear
from ticketlab.search.evaluators import (DeltaEvaluator, ForwardEvaluator, IncrementalEvaluator, LiveEvaluator,
                                        TrainedEvaluator, make_evaluator)
from ticketlab.search.evaluators import delta as delta_module
from ticketlab.search.evaluators import live as live_module
from ticketlab.search.evaluators.certificate import TOLERANCE, recount_blocks
from ticketlab.search.moves import Move
from ticketlab.search.reference import reference_score
from ticketlab.search.space import SearchSpace, unit_space, weight_space

# Three batches for LeNet (the last one ragged); BasicCNN on small 3x23x23 images (a 2x2
# final map, so the classifier reads each filter as a block of 4 inputs) to keep it quick.
LENET = ("lenet300_100", (1, 28, 28), False, 520)
BASICCNN = ("basiccnn", (3, 23, 23), None, 260)


def setting(spec, tmp_path):
    """A model, a checkpoint of it (also saved to disk), its builder, and a scoring subset."""
    name, shape, bias, images = spec
    config = ModelConfig(name=name, bias=bias)
    model = build_model(config, shape, 10, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    weights = {}
    for key, value in model.state_dict().items():
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=generator) + 0.5
        elif value.is_floating_point():  # every weight, bias, BatchNorm scale and shift, and mean nonzero
            value = value + 0.05 * torch.randn(value.shape, generator=generator)
        weights[key] = value
    path = tmp_path / f"{name}.pt"
    torch.save({"model": weights, "iteration": 0}, path)
    x = torch.randn(images, *shape, generator=generator)
    y = torch.randint(0, 10, (images,), generator=generator)

    def builder() -> nn.Module:
        with torch.device("meta"):
            return MODELS[name](config, shape, 10)

    return model, weights, path, builder, x, y


def move_sequence(space: SearchSpace, count: int, sparsity: float, seed: int = 0) -> list[torch.Tensor]:
    """Candidates of an annealing-like walk: h random kept and h pruned units swapped, half of
    them accepted; every fourth move stays inside one layer, so each layer is the first changed one."""
    return [candidate for candidate, _ in walk_with_moves(space, count, sparsity, seed)]


def walk_with_moves(space: SearchSpace, count: int, sparsity: float, seed: int = 0) -> list[tuple[torch.Tensor, Move]]:
    """move_sequence's candidates, each with its Move from the mask it was drawn from."""
    generator = torch.Generator().manual_seed(seed)
    keep = space.random(sparsity, generator)
    candidates = []
    for i in range(count):
        h = int(torch.randint(1, 30, (), generator=generator))
        within = space.layers[i // 4 % len(space.layers)].slice if i % 4 == 0 else slice(0, space.size)
        part = keep[within]
        kept, pruned = part.nonzero().flatten(), (~part).nonzero().flatten()
        h = min(h, len(kept) - 1, len(pruned))
        out = within.start + kept[torch.randperm(len(kept), generator=generator)[:h]]
        into = within.start + pruned[torch.randperm(len(pruned), generator=generator)[:h]]
        candidate = keep.clone()
        candidate[out] = False
        candidate[into] = True
        candidates.append((candidate, Move(keep, torch.cat([out, into]))))
        if bool(torch.rand((), generator=generator) < 0.5):
            keep = candidate
    return candidates


@pytest.mark.parametrize("spec, granularity, sparsity, count", [
    (LENET, "weight", 0.9, 60), (LENET, "filter", 0.7, 50), (BASICCNN, "filter", 0.7, 50),
])
def test_scores_equal_the_thesis_evaluator_bit_for_bit(spec, granularity, sparsity, count, tmp_path):
    model, weights, path, builder, x, y = setting(spec, tmp_path)
    space = weight_space(model) if granularity == "weight" else unit_space(model)
    candidates = move_sequence(space, count, sparsity)
    # The loss is the strict test for the incremental evaluator (every bit of the logits counts);
    # accuracy comes from the delta evaluator (an MLP) or the live-channel one (a CNN's filters),
    # whose certificate makes it the reference's too.
    certified = DeltaEvaluator if spec is LENET else LiveEvaluator
    for metric in ("loss", "accuracy"):
        evaluator = make_evaluator(model, weights, space, x, y, metric=metric)
        assert isinstance(evaluator, certified if metric == "accuracy" else IncrementalEvaluator)
        scores = [evaluator.score(keep) for keep in candidates]
        expected = [reference_score(path, builder, space.to_mask(keep), x, y, metric) for keep in candidates]
        assert scores == expected
        assert evaluator.evaluations == count


@pytest.mark.parametrize("spec, granularity, sparsity", [
    (LENET, "weight", 0.9), (LENET, "filter", 0.7), (BASICCNN, "filter", 0.7),
])
def test_a_move_hint_changes_no_score_and_spares_the_search_for_flips(spec, granularity, sparsity, tmp_path):
    model, weights, path, builder, x, y = setting(spec, tmp_path)
    space = weight_space(model) if granularity == "weight" else unit_space(model)
    plain = make_evaluator(copy.deepcopy(model), weights, space, x, y)
    hinted = make_evaluator(model, weights, space, x, y)
    searches = []
    if isinstance(hinted, DeltaEvaluator):
        nearest = hinted.nearest
        hinted.nearest = lambda *args: searches.append(1) or nearest(*args)
    walk = walk_with_moves(space, 40, sparsity, seed=7)
    for i, (keep, move) in enumerate(walk):
        score = hinted.score(keep, move)
        assert score == plain.score(keep)
        if i % 5 == 0:
            assert score == reference_score(path, builder, space.to_mask(keep), x, y)
    if isinstance(hinted, DeltaEvaluator):
        # Only the moves from the walk's start (never scored itself) had to be searched for their flips.
        assert len(searches) == sum(move.base is walk[0][1].base for _, move in walk)
    # A hint naming a mask the evaluator no longer holds is no hint: the score is found as without one.
    old, move = walk_with_moves(space, 1, sparsity, seed=8)[0]
    assert hinted.score(old, move) == reference_score(path, builder, space.to_mask(old), x, y)


def test_layers_before_the_first_changed_one_are_reused(tmp_path):
    model, weights, _, _, x, y = setting(LENET, tmp_path)
    space = weight_space(model)
    evaluator = make_evaluator(model, weights, space, x, y, metric="loss")
    keep = space.random(0.9, torch.Generator().manual_seed(0))
    evaluator.score(keep)
    moved = keep.clone()
    output_layer = space.layers[-1].slice
    moved[output_layer] = moved[output_layer].flip(0)
    evaluator.score(moved)
    new, old = evaluator.snapshots
    assert new.outputs[0] is old.outputs[0] and new.outputs[1] is old.outputs[1]
    assert new.outputs[2] is not old.outputs[2]


def test_a_subset_of_units_is_padded_to_a_size_whose_bits_are_the_whole_layers(tmp_path, monkeypatch):
    """Which subset sizes reproduce the full layer's bits depends on the CPU's library; the
    evaluator computes only sizes that its probe found exact, and the probe's verdict holds."""
    from ticketlab.search.evaluators import chain

    model, weights, _, _, x, y = setting(LENET, tmp_path)
    evaluator = make_evaluator(model, weights, weight_space(model), x, y, metric="loss")
    first = evaluator.layers[0]  # 784 -> 300
    inputs = [xb for xb, _ in evaluator.batches]
    three = torch.zeros(first.rows, dtype=torch.bool)
    three[[5, 100, 299]] = True
    probed = []
    monkeypatch.setattr(chain.ChainLayer, "subset_is_exact",
                        lambda layer, count, shape: probed.append(count) is None and count >= 64)
    rows = first.rows_to_compute(three, inputs)
    assert len(rows) == 64 and three[rows].sum() == 3  # the 3 asked for, padded to the first exact size
    asked = len(probed)
    assert torch.equal(first.rows_to_compute(three, inputs), rows) and len(probed) == asked  # remembered
    first.padded.clear()  # the layer remembers the probe's answers; this test changes them
    monkeypatch.setattr(chain.ChainLayer, "subset_is_exact", lambda layer, count, shape: count > 288)
    assert first.rows_to_compute(three, inputs) is None  # no exact subset: the whole layer
    monkeypatch.undo()
    first.padded.clear()
    rows = first.rows_to_compute(three, inputs)
    weight = weights["fc1.weight"]
    for xb in inputs:  # what it chose really has the whole layer's bits, on this machine
        flat = xb.flatten(1)
        whole = torch.nn.functional.linear(flat, weight)
        part = torch.nn.functional.linear(flat, weight if rows is None else weight[rows])
        assert torch.equal(part, whole if rows is None else whole[:, rows])


def test_the_weights_are_never_written_and_score_many_is_a_loop(tmp_path):
    model, weights, _, _, x, y = setting(BASICCNN, tmp_path)
    before = {key: value.clone() for key, value in weights.items()}
    space = unit_space(model)
    candidates = move_sequence(space, 8, 0.6, seed=3)
    looped = make_evaluator(model, weights, space, x, y)
    batched = make_evaluator(model, weights, space, x, y)
    assert [looped.score(keep) for keep in candidates] == batched.score_many(candidates)
    assert looped.evaluations == batched.evaluations == 8
    assert all(torch.equal(weights[key], before[key]) for key in before)


def test_other_models_get_a_whole_forward_pass_with_the_same_scores(tmp_path):
    config = ModelConfig(name="conv2")
    shape = (1, 12, 12)
    model = build_model(config, shape, 10, generator=torch.Generator().manual_seed(0))
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    torch.save(weights, tmp_path / "conv2.pt")
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, *shape, generator=generator), torch.randint(0, 10, (300,), generator=generator)
    space = weight_space(model)
    evaluator = make_evaluator(model, weights, space, x, y, metric="loss")
    assert isinstance(evaluator, ForwardEvaluator)

    def builder() -> nn.Module:
        return build_model(config, shape, 10)

    for keep in move_sequence(space, 6, 0.8):
        assert evaluator.score(keep) == reference_score(tmp_path / "conv2.pt", builder, space.to_mask(keep), x, y,
                                                        "loss")
    assert all(torch.equal(weights[key], value) for key, value in model.state_dict().items()
               if key not in space.to_mask(keep))


def test_training_each_candidate_is_deterministic_and_keeps_pruned_weights_at_zero(tmp_path):
    model, weights, _, _, x, y = setting(LENET, tmp_path)
    before = {key: value.clone() for key, value in weights.items()}
    space = unit_space(model)
    first, second = move_sequence(space, 2, 0.5)
    config = TrainConfig(lr=0.01, batch_size=64)
    evaluator = make_evaluator(model, weights, space, x, y, metric="loss", train_steps=5, train_config=config)
    assert isinstance(evaluator, TrainedEvaluator)
    score = evaluator.score(first)
    mask = space.to_mask(first)
    assert all(not model.get_parameter(name)[~keep].any() for name, keep in mask.items())
    evaluator.score(second)
    assert evaluator.score(first) == score
    untrained = make_evaluator(model, weights, space, x, y, metric="loss").score(first)
    assert score > untrained  # trained on the scoring subset itself: the loss falls
    assert all(torch.equal(weights[key], before[key]) for key in before)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_candidates_trained_on_sparse_kernels_score_what_the_dense_masked_ones_do(tmp_path, optimizer):
    model, weights, _, _, x, y = setting(LENET, tmp_path)
    space = weight_space(model)
    config = TrainConfig(optimizer=optimizer, lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=64)
    dense = make_evaluator(copy.deepcopy(model), weights, space, x, y, metric="loss", train_steps=8,
                           train_config=config, kernels="dense")
    sparse = make_evaluator(model, weights, space, x, y, metric="loss", train_steps=8, train_config=config,
                            kernels="sparse")
    for keep in move_sequence(space, 3, 0.9):
        score = sparse.score(keep)
        assert score == pytest.approx(dense.score(keep), abs=1e-5)  # float32 sums in another order
        assert sparse.score(keep) == score  # each candidate trains the same way every time
    assert not any(isinstance(module, SparseLinear) for module in model.modules())  # copies train sparse
    with pytest.raises(TicketlabError, match="unknown kernels 'csr'"):
        make_evaluator(model, weights, space, x, y, train_steps=1, kernels="csr")


def fresh_logits(model, weights, mask, x):
    """The masked network's logits from a whole forward pass of a copy of the model."""
    model = copy.deepcopy(model)
    model.load_state_dict(weights)
    mask.apply(model)
    model.eval()
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("granularity, sparsity, count, resync", [("weight", 0.9, 400, 150), ("filter", 0.7, 120, 40)])
def test_delta_scores_stay_within_float_rounding_and_its_accuracy_is_exact(granularity, sparsity, count, resync,
                                                                          tmp_path):
    model, weights, path, builder, x, y = setting(LENET, tmp_path)
    space = weight_space(model) if granularity == "weight" else unit_space(model)
    candidates = move_sequence(space, count, sparsity, seed=5)
    exact = make_evaluator(model, weights, space, x, y, metric="loss")
    delta = make_evaluator(model, weights, space, x, y, metric="loss", exact=False)
    assert isinstance(delta, DeltaEvaluator)
    delta.resync = resync
    accuracy = make_evaluator(model, weights, space, x, y)
    accuracy.resync = resync
    worst = 0.0
    for i, keep in enumerate(candidates):
        loss, expected = delta.score(keep), exact.score(keep)
        assert loss == pytest.approx(expected, rel=1e-5)
        logits = delta.snapshots[0].slot.post[-1].t()
        worst = max(worst, float((logits - fresh_logits(model, weights, space.to_mask(keep), x)).abs().max()))
        if i % 2:
            assert accuracy.score(keep) == reference_score(path, builder, space.to_mask(keep), x, y)
    print(f"{granularity}: largest logit difference {worst:.2e}; drift at resync {delta.drift:.2e} of the "
          f"largest logit; {accuracy.recounted_images} near-tied images recounted")
    assert worst < 1e-4
    assert delta.drift < TOLERANCE / 4 and delta.resync == resync  # the certificate's margin held
    assert delta.evaluations == count
    assert delta.exact_forwards >= 2  # re-synchronised at least once
    assert all(snapshot.depth <= resync for snapshot in delta.snapshots)


def test_near_tied_images_are_recounted_exactly_in_blocks(tmp_path, monkeypatch):
    # With a tolerance of a whole logit every image is near-tied: every prediction then comes
    # from a recount of a block of 32 images (or the ragged last batch), which must give the
    # reference's bits; the 520 images make blocks that cross no batch and a last batch of 8.
    model, weights, path, builder, x, y = setting(LENET, tmp_path)
    space = weight_space(model)
    candidates = move_sequence(space, 6, 0.9, seed=4)
    evaluator = make_evaluator(model, weights, space, x, y)
    evaluator.score(candidates[0])  # an exact forward
    monkeypatch.setattr(delta_module, "TOLERANCE", float("inf"))
    for keep in candidates[1:]:
        assert evaluator.score(keep) == reference_score(path, builder, space.to_mask(keep), x, y)
    assert evaluator.recounted_images == len(y) * (len(candidates) - 1)
    blocks = recount_blocks(torch.arange(len(y)), len(y))
    assert blocks.tolist() == [*range(0, 512, 32), 512]


def test_a_mask_that_cuts_the_network_off_is_scored_exactly_and_so_are_masks_chained_from_it(tmp_path):
    # Without its output weights LeNet's logits are all exactly 0 (it has no biases). Such a mask
    # reached at a resync once divided by its zero scale; a chain from it must not certify the
    # masks that revive the network against that zero.
    model, weights, path, builder, x, y = setting(LENET, tmp_path)
    space = weight_space(model)
    output = space.layers[-1].slice
    live = space.random(0.9, torch.Generator().manual_seed(3))
    dead = live.clone()
    dead[output] = False
    revived, again = dead.clone(), dead.clone()
    revived[output.start::31] = True
    again[output.start + 5::37] = True
    evaluator = make_evaluator(model, weights, space, x, y)
    evaluator.resync = 1
    # live: exact; revived: updated from it; dead: at a resync (an exact forward of zeros); again: updated from dead
    for keep in (live, revived, dead, again):
        assert evaluator.score(keep) == reference_score(path, builder, space.to_mask(keep), x, y)
    assert evaluator.snapshots[0].depth == 1 and evaluator.snapshots[1].scale == 0.0
    assert evaluator.snapshots[0].scale > 0


def test_delta_resync_bounds_the_chain_of_updates(tmp_path):
    model, weights, _, _, x, y = setting(LENET, tmp_path)
    space = weight_space(model)
    delta = make_evaluator(model, weights, space, x, y, exact=False)
    delta.resync = 3
    depths = []
    for keep in move_sequence(space, 60, 0.9, seed=2):
        delta.score(keep)
        depths.append(delta.snapshots[0].depth)
    assert max(depths) == 3 and depths.count(0) >= 2
    assert delta.exact_forwards == depths.count(0)  # the first score among them


def test_which_evaluator_each_model_and_objective_gets(tmp_path):
    model, weights, _, _, x, y = setting(BASICCNN, tmp_path)
    assert isinstance(make_evaluator(model, weights, unit_space(model), x, y), LiveEvaluator)
    assert isinstance(make_evaluator(model, weights, unit_space(model), x, y, exact=False), LiveEvaluator)
    assert isinstance(make_evaluator(model, weights, unit_space(model), x, y, metric="loss"), IncrementalEvaluator)
    assert isinstance(make_evaluator(model, weights, weight_space(model), x, y), IncrementalEvaluator)
    lenet, lenet_weights, _, _, x, y = setting(LENET, tmp_path)
    space = weight_space(lenet)
    assert isinstance(make_evaluator(lenet, lenet_weights, space, x, y), DeltaEvaluator)
    assert isinstance(make_evaluator(lenet, lenet_weights, space, x, y, metric="loss"), IncrementalEvaluator)
    assert isinstance(make_evaluator(lenet, lenet_weights, space, x, y, metric="loss", exact=False), DeltaEvaluator)


def test_bad_settings_are_clear_errors(tmp_path):
    model, weights, _, _, x, y = setting(LENET, tmp_path)
    space = weight_space(model)
    with pytest.raises(TicketlabError, match="unknown search metric"):
        make_evaluator(model, weights, space, x, y, metric="f1")
    with pytest.raises(TicketlabError, match="does not fit the model"):
        make_evaluator(model, {k: v for k, v in weights.items() if k != "fc2.weight"}, space, x, y)
    other = build_model(ModelConfig(name="basiccnn"), (1, 28, 28), 10)
    with pytest.raises(TicketlabError, match="the model does not have"):
        make_evaluator(model, weights, weight_space(other), x, y)
    with pytest.raises(TicketlabError, match="train_steps"):
        make_evaluator(model, weights, space, x, y, train_steps=-1)


def test_live_channel_scores_stay_within_float_rounding_and_its_accuracy_is_exact(tmp_path, monkeypatch):
    monkeypatch.setattr(live_module, "CHECK_EVERY", 15)
    model, weights, path, builder, x, y = setting(BASICCNN, tmp_path)
    space = unit_space(model)
    candidates = move_sequence(space, 40, 0.7, seed=5)
    exact = make_evaluator(model, weights, space, x, y, metric="loss")
    live = make_evaluator(model, weights, space, x, y, metric="loss", exact=False)
    accuracy = make_evaluator(model, weights, space, x, y)
    assert isinstance(live, LiveEvaluator) and isinstance(accuracy, LiveEvaluator)
    for i, keep in enumerate(candidates):
        assert live.score(keep) == pytest.approx(exact.score(keep), rel=1e-5)
        if i % 3 == 0:
            assert accuracy.score(keep) == reference_score(path, builder, space.to_mask(keep), x, y)
    print(f"live channels: rounding {live.drift:.2e} of the largest logit; "
          f"{accuracy.recounted_images} near-tied images recounted")
    assert 0 < live.drift < TOLERANCE / 4 and live.relative == TOLERANCE  # the certificate's margin held
    assert live.exact_forwards == -(-live.computed // 15) and live.computed == len(candidates)
    # A rounding measured near the tolerance widens it to 4 times the rounding.
    live.relative = live.drift / 2
    live.computed = 15 * 10
    live.score(space.random(0.7, torch.Generator().manual_seed(9)))
    assert live.relative == 4 * live.drift


def test_live_channels_reuse_the_layers_before_the_first_changed_one_and_recount_near_ties(tmp_path):
    model, weights, path, builder, x, y = setting(BASICCNN, tmp_path)
    space = unit_space(model)
    evaluator = make_evaluator(model, weights, space, x, y)
    keep = space.random(0.7, torch.Generator().manual_seed(0))
    evaluator.score(keep)  # an exact forward, the first score
    moved = keep.clone()
    last_conv = space.layers[-2].slice
    moved[last_conv] = moved[last_conv].flip(0)
    evaluator.relative = float("inf")  # every image near-tied: every prediction from a recount in blocks
    assert evaluator.score(moved) == reference_score(path, builder, space.to_mask(moved), x, y)
    assert evaluator.recounted_images == len(y)
    new, old = evaluator.snapshots
    assert all(new.outputs[k] is old.outputs[k] for k in range(len(space.layers) - 2))
    assert new.outputs[-2] is not old.outputs[-2]
    # Only live filters are held: the flipped layer's output has as many channels as it keeps live.
    assert new.outputs[-2][0].shape[1] == len(new.live[-2]) < space.layers[-2].slice.stop - last_conv.start
