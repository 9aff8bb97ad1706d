"""Issue 14's goal, as a user would write it: their own model with a residual add, a depthwise conv
and a layer used twice goes through every structured criterion, masked training, shrink, save,
load and ONNX export in ten lines of their code, with no hand-written groups."""

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ticketlab as tl
from ticketlab.sparsity.criteria import CRITERIA


class Goal(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.depthwise, self.bn1 = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False), nn.BatchNorm2d(12)
        self.shared = nn.Conv2d(12, 12, 1)  # used twice, on the stream
        self.wide, self.bn2 = nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(x + self.bn1(self.depthwise(x)))
        x = F.relu(self.shared(F.relu(self.shared(x))) + x)
        return self.head(F.relu(self.bn2(self.wide(x))).mean(dim=(2, 3)))


STRUCTURED = sorted(name for name, criterion in CRITERIA.items() if criterion.structured)


@pytest.mark.parametrize("criterion", STRUCTURED)
def test_a_users_model_goes_through_the_whole_structured_path_in_ten_lines(criterion, tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(240, 3, 16, 16), torch.randint(0, 4, (240,))
    model = Goal()
    init = {name: t.clone() for name, t in model.state_dict().items()}  # for criteria that compare with init
    with torch.no_grad():  # a trained-looking BatchNorm, so bn_scale has scales to rank
        for bn in (model.bn0, model.bn1, model.bn2):
            bn.weight.uniform_(0.1, 1.0)

    # --- the user's lines ---
    tl.trace(model, x[:8])
    seed = torch.Generator().manual_seed(0)  # for the random control
    context = tl.ScoreContext(model, tl.prunable_names(model), init=init, generator=seed)
    mask = tl.score_and_select(context, criterion, 0.5, scope="layerwise")
    tl.masked_fit(model, (x, y), tl.TrainConfig(steps="2ep", batch_size=32), mask, progress=False)
    units = tl.units_from_mask(model, mask)
    small = tl.shrink(model, units)  # raises unless equivalent to the masked model (<= 1e-5)
    tl.save_model(small, tmp_path / "small.safetensors", units)
    again = tl.load(tmp_path / "small.safetensors", factory=Goal)
    tl.export_onnx(again, tmp_path / "small.onnx", (3, 16, 16))
    # --- what they should get ---

    assert all(not model.get_parameter(name)[~keep].any() for name, keep in mask.items())  # pruned stay zero
    assert any(not keep.all() for keep in units.values())
    assert sum(p.numel() for p in again.parameters()) < sum(p.numel() for p in model.parameters())
    model.eval()
    again.eval()
    with torch.no_grad():
        other = torch.randn(16, 3, 16, 16)
        assert (again(other) - model(other)).abs().max() <= 1e-5
    onnx.checker.check_model(onnx.load(tmp_path / "small.onnx"))
