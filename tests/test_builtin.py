"""The shipped model is trained: it prunes easy tokens and stays accurate while doing so."""

import pytest

from dtp_deploy.builtin import builtin_checkpoint_path, load_builtin_model, open_model
from dtp_deploy.report import model_summary


@pytest.fixture(scope="module")
def summary():
    return model_summary(None, scenes=16)


def test_builtin_loads_with_its_config():
    model = load_builtin_model()
    assert model.config.arch == "dtop-vit-t" and model.config.num_classes == 8
    assert model.config.class_names[0] == "sky"
    assert builtin_checkpoint_path().is_file()
    assert open_model(None, pruning=False).pruning is False


def test_builtin_prunes_and_keeps_accuracy(summary):
    assert summary["stages"][1]["keep_ratio"] < 0.8, "easy tokens should exit after stage 0"
    assert summary["gmacs_ratio"] < 0.9
    assert summary["miou_dense"] > 0.7, "the built-in model should segment synthetic scenes"
    assert summary["miou_pruned"] > summary["miou_dense"] - 0.03
    assert summary["pruned_dense_agreement"] > 0.95


def test_unknown_builtin_is_refused():
    with pytest.raises(ValueError, match="no built-in model"):
        builtin_checkpoint_path("vit-huge")
