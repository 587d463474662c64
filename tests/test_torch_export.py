"""The model traces with torch.export: the token ops stay single nodes with a data-dependent
width, and the exported program computes what the eager model computes."""

import numpy as np
import pytest
import torch

from dtp_deploy.builtin import load_builtin_model
from dtp_deploy.data import SyntheticScenes
from dtp_deploy.preprocess import to_tensor


@pytest.fixture(scope="module")
def exported():
    model = load_builtin_model(thresholds=(0.9, 0.9))  # both exits on: two splits
    example = torch.randn(3, 3, 192, 192)
    return model, torch.export.export(model, (example,), strict=False)


def test_token_ops_stay_single_nodes(exported):
    _, program = exported
    targets = [str(n.target) for n in program.graph.nodes if "dtp" in str(n.target)]
    assert targets.count("dtp.token_split.default") == 2
    assert targets.count("dtp.token_reconstruct.default") == 3


@pytest.mark.parametrize("content", ["scenes", "noise"])
def test_exported_program_matches_eager(exported, content):
    model, program = exported
    scenes = SyntheticScenes(3, 192, 192, seed=7)
    images = to_tensor(np.stack([scenes[i][0] for i in range(3)]), model.config.mean, model.config.std)
    if content == "noise":  # few confident tokens: a different keep count per image
        images = torch.randn(3, 3, 192, 192) * torch.tensor([0.1, 1.0, 3.0])[:, None, None, None]
    with torch.inference_mode():
        want_scores, want_counts = model(images)
        got_scores, got_counts = program.module()(images)
    assert torch.equal(got_counts, want_counts)
    torch.testing.assert_close(got_scores, want_scores, atol=1e-5, rtol=1e-5)
    assert (want_counts[:, 1] < want_counts[:, 0]).any(), "the case must actually prune"
