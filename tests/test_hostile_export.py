"""``dtp-export`` of a checkpoint whose weights are not finite: refused before the export."""

import torch
from click.testing import CliRunner
from test_export_cli import SHALLOW

from dtp_deploy.checkpoint import save_model
from dtp_deploy.models import build_model
from exporters.cli import main


def test_nan_weights_are_refused(tmp_path):
    torch.manual_seed(0)
    model = build_model("dtop-vit-t", num_classes=3, img_size=(32, 32), **SHALLOW)
    with torch.no_grad():
        next(model.parameters())[0] = float("nan")
    checkpoint = tmp_path / "nan.pth"
    save_model(model, checkpoint)
    result = CliRunner().invoke(main, [str(checkpoint), "--flavour", "portable"])
    assert result.exit_code == 2, result.output
    assert "hold NaN or inf" in result.output and "nothing written" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["nan.pth"]
