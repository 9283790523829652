"""Inputs predicted from the given ones by the pre-trained TST-MM (`transfer.predict_inputs`).

A model served colour alone can still read depth when cross-modal pre-training taught it to
predict depth from colour: a frozen copy of the pre-trained encoder reads the given images
with every token visible, and the pre-training's decoder of each missing image modality
predicts all of that modality's tokens, as it did for masked ones. The predictions enter the
perception model's encoder as if sensed. A run pre-trained on colour alone (TST-MAE) has no
such decoder, so only cross-modal pre-training can offer this.

Decoder outputs live in the space of their reconstruction loss: `standardized_l1` targets are
standardised per sample, and are read as the registry's normalised units (for depth: mean
2.5 m, std 1.5 m); `l1` and `mse` targets are the normalised input itself. Other losses
(per-patch normalised colour, binary edges) cannot be turned back into an input and are refused.
Nothing here trains: the copy stays frozen and in inference mode whatever the caller does.
"""
from __future__ import annotations

import torch
from torch import nn

from tst_ros import modalities as registry
from tst_ros.models.losses import unpatchify
from tst_ros.models.vit import SPATIAL_KINDS

PREDICTABLE_LOSSES = ("standardized_l1", "l1", "mse")


class PredictedInputs(nn.Module):
    """(given inputs) -> given inputs plus the `predicted` image modalities (B, C, H, W), each in
    the registry's normalised units. `decoders` are TST-MM decoders (`tst_ros.models.multimae.Decoder`)."""

    def __init__(self, encoder: nn.Module, decoders: nn.ModuleDict, given: list[str], predicted: list[str],
                 decoder_dim: int, decoder_depth: int):
        super().__init__()
        check_predictable(encoder, given, predicted)
        self.encoder = encoder.requires_grad_(False)
        self.decoders = nn.ModuleDict({n: decoders[n] for n in predicted}).requires_grad_(False)
        self.given, self.predicted = list(given), list(predicted)
        self.decoder_dim, self.decoder_depth = int(decoder_dim), int(decoder_depth)
        self.eval()

    def train(self, mode: bool = True) -> "PredictedInputs":
        return super().train(False)         # frozen: batch norms and dropout stay in inference mode

    def describe(self) -> dict:
        return {"given": self.given, "predicted": self.predicted, "encoder": self.encoder.describe(),
                "decoder_dim": self.decoder_dim, "decoder_depth": self.decoder_depth}

    @torch.no_grad()
    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        enc = self.encoder
        tokens = torch.cat([enc.tokenize(n, inputs[n]) for n in self.given], dim=1)
        encoded = enc.encode(tokens)
        b = encoded.shape[0]
        key_mask = torch.ones(encoded.shape[:2], dtype=torch.bool, device=encoded.device)
        out = dict(inputs)
        for name in self.predicted:
            slots = torch.full((b, enc.num_tokens(name)), -1, dtype=torch.long, device=encoded.device)
            pred = self.decoders[name](encoded, key_mask, slots).to(tokens.dtype)
            out[name] = unpatchify(pred, enc.patch_size, registry.get(name).channels, enc.grid)
        return out


def check_predictable(encoder, given: list[str], predicted: list[str]) -> None:
    """ValueError unless every predicted modality is an image the encoder knows, with a loss that maps back
    to an input, and not among the given ones."""
    for name in predicted:
        if name not in encoder.modalities:
            raise ValueError(f"cannot predict {name!r}: the pre-trained encoder knows {encoder.modalities}")
        mod = registry.get(name)
        if mod.kind not in SPATIAL_KINDS or mod.loss not in PREDICTABLE_LOSSES:
            raise ValueError(f"cannot predict {name!r} as an input: its reconstruction loss {mod.loss!r} does not "
                             f"map back to the input (predictable: losses {PREDICTABLE_LOSSES})")
        if name in given:
            raise ValueError(f"{name!r} is both given and predicted")
    if not given:
        raise ValueError("predicting inputs needs at least one given input")


def build_predictor(description: dict) -> PredictedInputs:
    """The architecture `PredictedInputs.describe()` names, for a saved model's weights to load into."""
    from tst_ros.models.multimae import TSTMM
    from tst_ros.models.tpmome import encoder_from_description

    encoder = encoder_from_description(description["encoder"])
    decoders = TSTMM(encoder, decoder_dim=description["decoder_dim"],
                     decoder_depth=description["decoder_depth"]).decoders
    return PredictedInputs(encoder, decoders, description["given"], description["predicted"],
                           description["decoder_dim"], description["decoder_depth"])


def load_predictor(encoder_source: str, given: list[str], predicted: list[str]) -> PredictedInputs:
    """The frozen pre-trained encoder of a masked-modeling run and its decoders of `predicted`."""
    from tst_ros.models.io import load_encoder
    from tst_ros.models.multimae import TSTMM
    from tst_ros.perception.building_mm import pretraining_run
    from tst_ros.train.checkpoint import CHECKPOINT_FILE, read_model_part

    run_dir, cfg = pretraining_run(encoder_source, "transfer.predict_inputs")
    encoder, _ = load_encoder(run_dir)
    check_predictable(encoder, given, predicted)
    decoders = TSTMM(encoder, decoder_dim=cfg.decoder_dim, decoder_depth=cfg.decoder_depth).decoders
    decoders.load_state_dict(read_model_part(run_dir / CHECKPOINT_FILE, "decoders"))
    return PredictedInputs(encoder, decoders, given, predicted, cfg.decoder_dim, cfg.decoder_depth)
