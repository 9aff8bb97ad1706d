"""Mask similarity and orthogonality: the analyses the SA thesis explained its tickets with."""

import math

import pytest
import torch

from ticketlab.analysis.orthogonality import orthogonality, orthogonality_scores
from ticketlab.analysis.similarity import cosine, hamming, jaccard, similarity_matrix, with_random_floor
from ticketlab.config import TicketlabError
from ticketlab.sparsity.mask import Mask


def _mask(*rows):
    return Mask({"fc.weight": torch.tensor(rows, dtype=torch.bool)})


def test_a_mask_is_equal_to_itself_and_shares_nothing_with_its_complement():
    generator = torch.Generator().manual_seed(0)
    mask = Mask({"a": torch.rand(30, 20, generator=generator) > 0.4, "b": torch.rand(7, generator=generator) > 0.5})
    complement = Mask({name: ~keep for name, keep in mask.items()})
    assert cosine(mask, mask) == pytest.approx(1) and jaccard(mask, mask) == 1 and hamming(mask, mask) == 0
    assert cosine(mask, complement) == 0 and jaccard(mask, complement) == 0 and hamming(mask, complement) == 1


def test_the_measures_on_a_small_pair_by_hand():
    a, b = _mask([1, 1, 0, 0], [1, 0, 0, 0]), _mask([1, 0, 1, 0], [1, 0, 0, 0])
    # both keep 2 (of a's 3 and b's 3); they differ on 2 of 8 entries
    assert cosine(a, b) == pytest.approx(2 / 3) and jaccard(a, b) == pytest.approx(2 / 4)
    assert hamming(a, b) == pytest.approx(2 / 8)


def test_random_masks_of_the_same_sparsity_are_the_floor_they_should_be():
    generator = torch.Generator().manual_seed(1)
    mask = Mask({"a": torch.rand(200, 100, generator=generator) < 0.2,
                 "b": torch.rand(100, 50, generator=generator) < 0.6})
    masks = with_random_floor({"magnitude": mask}, count=2, seed=3)
    assert list(masks) == ["magnitude", "random-1", "random-2"]
    for name in mask:  # the same count kept in every layer
        assert [int(m[name].sum()) for m in masks.values()] == [int(mask[name].sum())] * 3
    matrix = similarity_matrix(masks, "cosine")
    assert matrix[1][2] == matrix[2][1] and all(matrix[i][i] == pytest.approx(1) for i in range(3))
    # two random masks keeping k of a layer's n entries share k²/n of them, expected
    kept = {name: int(mask[name].sum()) for name in mask}
    overlap = sum(kept[name] ** 2 / mask[name].numel() for name in mask)
    assert matrix[1][2] == pytest.approx(overlap / mask.kept(), abs=0.02)
    assert matrix[0][1] == pytest.approx(overlap / mask.kept(), abs=0.02)  # and so does a random one with any mask
    union = 2 * mask.kept() - overlap
    assert similarity_matrix(masks, "jaccard")[1][2] == pytest.approx(overlap / union, abs=0.02)


def test_masks_are_compared_over_the_parameters_both_cover():
    weights = Mask({"fc.weight": torch.tensor([True, True, False, False])})
    units = Mask({"fc.weight": torch.tensor([True, False, True, False]), "fc.bias": torch.tensor([True, False])})
    assert cosine(weights, units) == pytest.approx(1 / 2) and hamming(weights, units) == pytest.approx(2 / 4)


def test_masks_of_different_models_and_unknown_measures_are_clear_errors():
    with pytest.raises(TicketlabError, match="different parameters or shapes"):
        cosine(_mask([1, 0]), Mask({"other": torch.ones(2, dtype=torch.bool)}))
    with pytest.raises(TicketlabError, match="unknown similarity measure 'dice'; expected one of cosine, jaccard"):
        similarity_matrix({"a": _mask([1, 0])}, "dice")
    with pytest.raises(TicketlabError, match="taken by the random floor"):
        with_random_floor({"random-1": _mask([1, 0])})


def test_orthogonality_is_zero_for_an_orthogonal_matrix_and_grows_with_correlated_rows():
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    assert orthogonality(q) == pytest.approx(0, abs=1e-12)
    scores = []
    for mix in (0.0, 0.5, 0.9):  # every column pulled towards the first
        w = q * (1 - mix) + mix * q[:, :1]
        w = w / w.norm(dim=0, keepdim=True)  # unit columns: only their correlation is left
        scores.append(orthogonality(w))
    assert scores[0] == pytest.approx(0, abs=1e-12) and scores[0] < scores[1] < scores[2]


def test_orthogonality_of_masked_layers_reads_a_conv_kernel_as_out_by_in():
    generator = torch.Generator().manual_seed(0)
    weights = {"conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
               "fc.weight": torch.randn(5, 6, generator=generator), "fc.bias": torch.randn(5, generator=generator)}
    mask = Mask({"conv.weight": torch.ones(4, 3, 3, 3, dtype=torch.bool),
                 "fc.weight": torch.rand(5, 6, generator=generator) > 0.5})
    scores = orthogonality_scores(weights, mask)
    assert list(scores) == ["conv.weight", "fc.weight"]
    matrix = weights["conv.weight"].reshape(4, 27).double()
    assert scores["conv.weight"] == pytest.approx(float(((matrix.T @ matrix - torch.eye(27)) ** 2).mean()))
    assert math.isfinite(scores["fc.weight"])
    with pytest.raises(TicketlabError, match="the weights have no 'x.weight'"):
        orthogonality_scores({}, Mask({"x.weight": torch.ones(2, 2, dtype=torch.bool)}))


@pytest.fixture(scope="module")
def masks_of_one_training(tmp_path_factory):
    """A short LeNet training (its initialisation kept) and three of its masks, as runs."""
    from ticketlab.config import DataConfig, ModelConfig, PruneConfig, Runtime, TrainConfig
    from ticketlab.sparsity.prune import prune
    from ticketlab.training.stage import train

    runtime = Runtime(runs_dir=str(tmp_path_factory.mktemp("runs")), progress=False)
    with pytest.MonkeyPatch.context() as patch:  # conftest's isolation is per test; this fixture outlives one
        patch.setenv("TICKETLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        dense = train(DataConfig(name="digits"), ModelConfig(name="lenet300_100"), TrainConfig(steps="30it"), runtime)
        made = [(label, prune(dense, PruneConfig(criterion=criterion, sparsity=sparsity), runtime).run.name)
                for label, criterion, sparsity in (("magnitude", "magnitude", 0.8), ("random", "random", 0.8),
                                                   ("sparser", "magnitude", 0.9))]
    return dense, made, runtime


def test_the_similarity_stage_keeps_the_matrices_of_its_masks_and_their_floor(masks_of_one_training):
    from ticketlab.analysis.similarity import load_masks, mask_similarity

    _, made, runtime = masks_of_one_training
    result = mask_similarity(made, runtime)
    expected = with_random_floor(load_masks(made, runtime.runs_dir))
    saved = result.matrices()
    assert saved["labels"] == ["magnitude", "random", "sparser", "random-1", "random-2"] and not result.cached
    for measure in ("cosine", "jaccard", "hamming"):
        assert saved[measure] == similarity_matrix(expected, measure)
    assert saved["cosine"][0][2] > saved["cosine"][0][3]  # two magnitude masks overlap above the floor
    again = mask_similarity(made, runtime)
    assert again.cached and again.path == result.path
    assert mask_similarity(made[::-1], runtime).path != result.path  # another order is another matrix
    with pytest.raises(TicketlabError, match="no run 'prune-000000000000'"):
        mask_similarity([("gone", "prune-000000000000")], runtime)


def test_the_orthogonality_stage_scores_the_masks_floor_and_unmasked_weights(masks_of_one_training):
    from ticketlab.analysis.orthogonality import UNMASKED, mask_orthogonality, orthogonality_table
    from ticketlab.analysis.similarity import load_masks

    dense, made, runtime = masks_of_one_training
    result = mask_orthogonality(made, dense.run.name, "0it", runtime)
    expected = orthogonality_table(dense.state_dict("0it"), with_random_floor(load_masks(made, runtime.runs_dir)))
    assert [row["mask"] for row in result.rows] == ["magnitude", "random", "sparser", "random-1", "random-2", UNMASKED]
    assert [list(row) for row in result.rows] == [["mask", "fc1.weight", "fc2.weight", "fc3.weight", "mean"]] * 6
    assert [row["mean"] for row in result.rows] == pytest.approx([row["mean"] for row in expected], rel=1e-12)
    assert mask_orthogonality(made, dense.run.name, "0it", runtime).cached
    with pytest.raises(TicketlabError, match="has no checkpoint '1ep'"):
        mask_orthogonality(made, dense.run.name, "1ep", runtime)
