"""Representation quality: a per-patch linear probe of semantic class on frozen features.

Each patch is labeled with the majority ground-truth class of its pixels (patches with no
labeled pixel are ignored); a linear layer is trained on standardised frozen encoder
features of the train split and scored on the val split (patch accuracy and mIoU).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tst_ros.modalities import PRIMARY_IMAGE
from tst_ros.train.data import open_dataset, prepare_batch

IGNORE = 255


def patch_labels(semantic: torch.Tensor, patch: int, ignore: int = IGNORE) -> torch.Tensor:
    """(B,S,S) class ids -> (B,S/p,S/p) majority class per patch (`ignore` if none labeled)."""
    b, h, w = semantic.shape
    sem = semantic.long().reshape(b, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    sem = sem.reshape(b, h // patch, w // patch, patch * patch)
    labeled = sem != ignore
    n_classes = int(sem[labeled].max()) + 1 if bool(labeled.any()) else 1
    counts = F.one_hot(torch.where(labeled, sem, 0), n_classes).mul_(labeled[..., None]).sum(3)
    out = counts.argmax(-1)
    return torch.where(labeled.any(-1), out, torch.full_like(out, ignore))


@torch.no_grad()
def extract(encoder, dataset, inputs: list[str], batch: int = 32,
            device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """-> (features (P,D), labels (P,)) for all labeled patches of the dataset."""
    feats, labels = [], []
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    for item in loader:
        if "semantic" not in item:
            raise ValueError("the probe needs ground-truth semantic labels, the dataset has none")
        item = prepare_batch(item, device)
        x = {n: item[n] for n in inputs}
        f = encoder(x).float().cpu()                                     # (B,D,g,g)
        lab = patch_labels(item["semantic"].cpu(), encoder.patch_size)    # (B,g,g)
        keep = lab != IGNORE
        feats.append(f.permute(0, 2, 3, 1)[keep])
        labels.append(lab[keep])
    if not feats:
        raise ValueError("the probe dataset is empty")
    return torch.cat(feats), torch.cat(labels)


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 300, weight_decay: float = 1e-3,
               seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression (L2 on the weights) solved with full-batch L-BFGS, so
    every encoder's probe is optimised to convergence rather than to a step budget."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def miou(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> float:
    idx = target * n_classes + pred
    conf = torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes).double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    present = conf.sum(1) > 0
    return float((inter[present] / union[present].clamp_min(1)).mean())


def probe(encoder, data: str | None = None, inputs: list[str] | None = None, train_set=None, val_set=None,
          steps: int = 300, device: str = "cpu", seed: int = 0) -> dict:
    """Linear probe of `encoder` (frozen) on `data` (store dir or synthetic:N) or given datasets."""
    inputs = list(inputs or [PRIMARY_IMAGE])
    missing = [n for n in inputs if n not in encoder.modalities]
    if missing:
        raise ValueError(f"encoder does not accept probe inputs {missing}; it accepts {encoder.modalities}")
    if train_set is None:
        train_set = open_dataset(data, "train", inputs, encoder.image_size)
    if val_set is None:
        val_set = open_dataset(data, "val", inputs, encoder.image_size)
    if len(val_set) == 0:
        raise ValueError(f"dataset {data!r} has no val split to score the probe on")
    encoder = encoder.to(device).eval()
    x_train, y_train = extract(encoder, train_set, inputs, device=device)
    x_val, y_val = extract(encoder, val_set, inputs, device=device)
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    n_classes = int(max(y_train.max(), y_val.max())) + 1
    head = fit_linear((x_train - mean) / std, y_train, n_classes, steps=steps, seed=seed)
    with torch.no_grad():
        pred_val = head((x_val - mean) / std).argmax(1)
        pred_train = head((x_train - mean) / std).argmax(1)
    return {"patch_accuracy": float((pred_val == y_val).double().mean()), "miou": miou(pred_val, y_val, n_classes),
            "train_patch_accuracy": float((pred_train == y_train).double().mean()),
            "train_patches": int(len(y_train)), "val_patches": int(len(y_val)), "classes": n_classes}


def resolve_encoder(spec: str, preset: str, image_size: int, patch: int, seed: int = 0,
                    inputs: list[str] | None = None):
    """'scratch' -> random encoder taking `inputs` (default rgb); otherwise a run dir / encoder file."""
    from tst_ros.models import build_encoder, load_encoder
    if spec == "scratch":
        torch.manual_seed(seed)
        enc = build_encoder(preset, list(inputs or [PRIMARY_IMAGE]), image_size, patch)
        return enc.eval(), {"method": "scratch", **enc.describe()}
    if not Path(spec).exists():
        raise FileNotFoundError(f"encoder {spec!r} does not exist (a run directory, an encoder file or 'scratch')")
    return load_encoder(spec)


def probe_many(specs: list[str], data: str, preset: str, image_size: int, patch: int, steps: int = 300,
               inputs: list[str] | None = None) -> dict:
    """Probe several encoders ('scratch' = random init with the probe's inputs) on the same data."""
    results = {}
    for spec in specs:
        enc, meta = resolve_encoder(spec, preset, image_size, patch, inputs=inputs)
        results[spec] = {**probe(enc, data, inputs=inputs, steps=steps), "method": meta.get("method", "?")}
    return results
