"""Weight-space interpolation of a fine-tuned encoder back toward its pre-trained weights (WiSE-FT).

Transfer fine-tunes the encoder on other buildings' labels, which can move it away from what
pre-training learned in the test building. Serving pre-trained + share x (fine-tuned - pre-trained)
keeps part of the pre-trained features at no training cost (`TransferConfig.encoder_interpolation`).
Only the weights that the pre-trained encoder has are blended; parts added for transfer (heads,
detail stages) keep their fine-tuned values.
"""
from __future__ import annotations


def encoder_anchor(encoder) -> dict:
    """A copy of the encoder's floating-point weights and statistics, the point interpolated toward."""
    return {k: v.detach().clone() for k, v in encoder.state_dict().items() if v.is_floating_point()}


def interpolate_encoder(model, anchor: dict, share: float) -> int:
    """Set `model.encoder`'s weights to anchor + share x (current - anchor) in place; -> tensors blended.
    A key missing from `anchor` or of another shape (a part added for transfer) is left as it is;
    at share 1 nothing moves, not even by rounding."""
    import torch

    if not 0 <= share <= 1:
        raise ValueError(f"the encoder's interpolation share is in [0, 1] (1: as fine-tuned), got {share}")
    blended = 0
    if share == 1:
        return blended
    with torch.no_grad():
        for key, value in model.encoder.state_dict().items():   # these share storage with the weights
            start = anchor.get(key)
            if start is None or start.shape != value.shape or not value.is_floating_point():
                continue
            start = start.to(value)
            value.copy_(start + share * (value - start))
            blended += 1
    return blended
