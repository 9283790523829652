"""Batch-norm statistics of a transferred model re-estimated on the building's own recorded
frames (AdaBN): the labels come from other buildings, the frames the robot will see come from
this one, and a batch norm's running mean and variance are the one part of a network that can
follow them without labels. Only batch norms change (the ImageNet backbone's; the heads use
group norms and the ViT layer norms), one forward pass over the frames, no gradients.
"""
from __future__ import annotations

import numpy as np

CHUNK = 16


def batch_norms(model) -> list:
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def reestimate_batch_norms(model, inputs: dict[str, np.ndarray], chunk: int = CHUNK) -> int:
    """Replace every batch norm's running statistics by the cumulative average over `inputs`
    ({modality: (N, C, S, S)} in the model's input order, preprocessed) fed in chunks; the model
    is left in inference mode. Returns the number of batch norms re-estimated."""
    import torch

    norms = batch_norms(model)
    frames = len(next(iter(inputs.values()))) if inputs else 0
    if not norms or frames == 0:
        return 0
    if frames < 2:
        raise ValueError("re-estimating batch-norm statistics needs at least 2 frames")
    device = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                            # cumulative average over the chunks
        m.train()
    try:
        with torch.no_grad():
            for start in range(0, frames - 1, chunk):   # a last chunk of one frame has no variance
                stop = min(start + chunk, frames)
                model(*[torch.from_numpy(inputs[n][start:stop]).to(device) for n in model.input_modalities])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
            m.eval()
    return len(norms)


def building_inputs(building_store: str, meta: dict) -> dict[str, np.ndarray]:
    """The building store's frames through the model's preprocessing: {modality: (N, C, S, S)}."""
    from tst_ros.perception.labeled_data import TransferData
    from tst_ros.perception.self_training import building_items

    items = building_items(building_store, meta["input_modalities"])
    return TransferData(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"]).inputs


def adapt_to_building(model, meta: dict, building_store: str) -> dict:
    """`reestimate_batch_norms` on the store's frames; returns what is recorded in the model's metadata."""
    from pathlib import Path

    inputs = building_inputs(building_store, meta)
    count = reestimate_batch_norms(model, inputs)
    return {"store": str(Path(building_store).resolve()), "frames": int(len(next(iter(inputs.values())))),
            "batch_norms": count}
