"""Train the built-in model on synthetic scenes (CPU, a few minutes) and save it.

    python scripts/train_builtin.py --arch dtop-vit-t --steps 600 -o dtp_deploy/assets/dtop-vit-t-synthetic.pth
    python scripts/train_builtin.py --arch dovit-vit-t --steps 400 -o dtp_deploy/assets/dovit-vit-t-synthetic.pth

Every stage's head is trained on all tokens (dense), as the token-pruning papers do before
pruning at inference; the per-token target is the class mix of the token's patch. Both methods'
``stage_predictions`` are per-class scores in [0, 1] (DToP: class probability times mask
sigmoid; DoViT: softmax), so one binary cross-entropy loss trains either.

Both shipped models then got their exit thresholds from dtp-calibrate (half a point of mIoU
allowed on its own calibration scenes): dtop-vit-t 0.5 / 1 (its second exit removed almost no
tokens but cost a head and a split, so it is off), dovit-vit-t 0.85 / 0.6:

    dtp-calibrate dtp_deploy/assets/dtop-vit-t-synthetic.pth --max-miou-drop 0.005 -o calibrated.pth
    mv calibrated.pth dtp_deploy/assets/dtop-vit-t-synthetic.pth

(and the same for dovit-vit-t-synthetic.pth).
"""

from __future__ import annotations

import math
import time

import click
import numpy as np
import torch
import torch.nn.functional as F

from dtp_deploy.checkpoint import save_model
from dtp_deploy.data import SYNTHETIC_CLASSES, SyntheticScenes
from dtp_deploy.models import build_model
from dtp_deploy.preprocess import to_tensor


def patch_targets(masks: torch.Tensor, num_classes: int, patch: int) -> torch.Tensor:
    """``(B, H, W)`` class ids -> ``(B, K, H/p, W/p)`` fraction of each class in each patch."""
    onehot = F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(onehot, patch)


@click.command()
@click.option("--arch", default="dtop-vit-t", show_default=True)
@click.option("--steps", default=600, show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--size", default=192, show_default=True, help="training crop (square)")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def main(arch: str, steps: int, batch: int, size: int, lr: float, seed: int, output: str) -> None:
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=len(SYNTHETIC_CLASSES), class_names=SYNTHETIC_CLASSES,
                        img_size=(size, size))
    model.train()
    scenes = SyntheticScenes(steps * batch, size, size, seed=seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    start = time.time()
    for step in range(steps):
        pairs = [scenes[step * batch + i] for i in range(batch)]
        images = to_tensor(np.stack([p[0] for p in pairs]), model.config.mean, model.config.std)
        target = patch_targets(torch.from_numpy(np.stack([p[1] for p in pairs])),
                               model.config.num_classes, model.config.patch_size)
        losses = [F.binary_cross_entropy(s.clamp(1e-6, 1 - 1e-6), target)
                  for s in model.stage_predictions(images)]
        loss = sum(losses)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  per stage "
                  f"{[round(x.item(), 4) for x in losses]}  {time.time() - start:.0f}s", flush=True)
    model.eval()
    save_model(model, output)
    print(f"saved {output}")


if __name__ == "__main__":
    main()
