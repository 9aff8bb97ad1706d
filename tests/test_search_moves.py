import pytest
import torch

from ticketlab.config import TicketlabError
from ticketlab.search.moves import Moves, Tabu, next_h


def layered(sizes, floors):
    return Moves(sizes, floors)


def random_keep(n, kept, generator):
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=generator)[:kept]] = True
    return keep


def test_thousands_of_moves_keep_the_sparsity_exact_and_the_floors():
    sizes, floors = [50, 30, 20], [10, 5, 1]
    moves, g = layered(sizes, floors), torch.Generator().manual_seed(0)
    keep = torch.zeros(100, dtype=torch.bool)
    keep[[*range(0, 12), *range(50, 56), 80, 81]] = True  # 20 kept, just above the floors
    for _ in range(3000):
        h = int(torch.randint(1, moves.max_h(keep) + 1, (), generator=g))
        new = moves.neighbour(keep, h, g)
        assert int(new.sum()) == 20
        assert int((new != keep).sum()) == 2 * h  # h kept units out, h pruned ones in
        assert (moves.kept_per_layer(new) >= torch.tensor(floors)).all()
        keep = new


def test_single_swaps_pick_every_unit_alike():
    moves, g = layered([100, 100], [1, 1]), torch.Generator().manual_seed(4)
    keep = random_keep(200, 50, g)
    out, into = torch.zeros(200), torch.zeros(200)
    for _ in range(6000):
        new = moves.neighbour(keep, 1, g)
        out += (keep & ~new).float()
        into += (new & ~keep).float()
    assert out[~keep].sum() == 0 and into[keep].sum() == 0
    assert 60 < out[keep].min() and out[keep].max() < 180  # 6000 / 50 = 120 each
    assert 10 < into[~keep].min() and into[~keep].max() < 75  # 6000 / 150 = 40 each


def test_h_is_capped_by_what_either_side_holds():
    g = torch.Generator().manual_seed(1)
    unfloored = layered([10], [0])
    mostly_kept = random_keep(10, 8, g)
    assert unfloored.max_h(mostly_kept) == 2  # only two pruned units can come in
    assert unfloored.max_h(~mostly_kept) == 2  # only two kept units can go
    floored = layered([5, 5], [3, 1])
    keep = torch.tensor([1, 1, 1, 1, 0, 1, 1, 0, 0, 0], dtype=torch.bool)
    assert floored.max_h(keep) == 1 + 1  # one unit above the floor in each layer
    with pytest.raises(TicketlabError, match="cannot swap h = 3 units here: 1 to 2"):
        floored.neighbour(keep, 3, g)
    with pytest.raises(TicketlabError, match="cannot swap h = 0"):
        floored.neighbour(keep, 0, g)


def test_a_layer_at_its_floor_never_loses_a_unit():
    moves, g = layered([6, 6], [3, 1]), torch.Generator().manual_seed(2)
    keep = torch.tensor([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0], dtype=torch.bool)
    for _ in range(500):
        new = moves.neighbour(keep, moves.max_h(keep), g)
        assert new[:3].all()  # layer 0 sits at its floor: only layer 1 gives units up
    with pytest.raises(TicketlabError, match="keeps 2 units of layer 0, below its floor of 3"):
        moves.check(torch.tensor([1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0], dtype=torch.bool), "the start mask")


def test_the_sawtooth_matches_the_thesis_by_hand():
    h = peak = 19
    sequence = [h]
    for _ in range(36):
        h, peak = next_h(h, peak, 0.99, sawtooth=True)
        sequence.append(h)
    # int(h * 0.99) steps down by one; below half the last peak, h jumps to 75% of it.
    assert sequence == [19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 14, 13, 12, 11, 10, 9, 8, 7, 10, 9, 8, 7, 6, 5,
                        7, 6, 5, 4, 5, 4, 3, 3, 2, 2, 1, 1, 1]


def test_the_geometric_schedule_decays_to_one_and_stays():
    h = peak = 100
    sequence = []
    for _ in range(6):
        h, peak = next_h(h, peak, 0.5, sawtooth=False)
        sequence.append(h)
    assert sequence == [50, 25, 12, 6, 3, 1]
    assert next_h(1, 100, 0.5, sawtooth=False) == (1, 100)


def test_tabu_remembers_the_last_masks_exactly_or_within_h():
    g = torch.Generator().manual_seed(3)
    masks = [random_keep(40, 10, g) for _ in range(4)]
    tabu = Tabu(3)
    for keep in masks:
        tabu.add(keep)
    assert not tabu.seen(masks[0], 1)  # pushed out by the fourth
    assert all(tabu.seen(keep.clone(), 1) for keep in masks[1:])
    moves = layered([40], [0])
    near = moves.neighbour(masks[3], 1, g)  # Hamming distance 2
    assert not tabu.seen(near, 1)
    hamming = Tabu(3, "hamming", [masks[3]])
    assert hamming.seen(near, 3) and not hamming.seen(near, 2)  # seen: distance < h
    off = Tabu(0)
    off.add(masks[0])
    assert not off.seen(masks[0], 1)
