"""SD-6: the pretrain stage, then the fine-tune stage from each seed's pretrained model.pt."""

from __future__ import annotations

from pathlib import Path

from normexp.claims import Pending

from . import measured


def plan_finetune(ctx) -> list[dict]:
    """Stage 1: the pretrain cell. Stage 2, once every pretrain run completed: the fine-tune cells, each run
    starting from its own seed's pretrained weights (``${seed}`` is the run's seed)."""
    p, budget = ctx.params, ctx.params["budget"][ctx.profile]
    pretrain = {"name": "pretrain", "overrides": [*p["pretrain"], f"train.steps={budget['pretrain_steps']}"]}
    if ctx.runs.table.empty:  # the first stage: no runs yet
        return [pretrain]
    rows = ctx.runs.rows("pretrain")
    if rows["status"].isin(["diverged", "failed"]).any():
        raise Pending("a pretrain run did not complete, so there is nothing to fine-tune")
    if not (rows["status"] == "completed").all():
        return [pretrain]
    weights = Path(rows["run_dir"].iloc[0]).resolve().parent / "seed${seed}" / "model.pt"
    finetune = [*p["finetune"], f"data.train_subset={budget['finetune_subset']}",
                f"train.steps={budget['finetune_steps']}"]
    start = f"train.init_from={weights}"
    return [pretrain,
            {"name": "ft_train_bn", "overrides": [*finetune, "norm=batch", start]},
            {"name": "ft_frozen_bn", "overrides": [*finetune, "norm=frozen_batch", start]},
            {"name": "scratch_bn", "overrides": [*finetune, "norm=batch"]}]


def finetune_curves(ctx):
    return measured.accuracy_curves(ctx)
