"""The rows of the specialisation table (`tst_ros.bench.specialization`): what each pre-trains,
how it transfers and is served.

Rows: scratch, TST-MAE, TST-MM, TST-MM fed RGB only (separates learned features from the depth input) and the
oracle: TST-MM transferred on labels of the test building's recorded stretch (an upper bound for the table, never
used by the product); TST-MM pre-trained on the sensors plus every teacher modality (`tst-mm+teachers`, the store
taught by `tst_ros.data.teach`; transfer and serving still take RGB-D only), or with the teachers as reconstruction
targets only, never visible to the encoder (`tst-mm+teachers (targets only)`); TST-MM pre-trained on
SOURCE_BUILDINGS other buildings only (twice the steps; the analogue of a broad-data generalist, never the test
style) and `tst-mm-adapted`, that encoder continued on the test building (`pretrain --init`);
`tst-mm-imagenet`, TST-MM continued from the generalist (preset `tiny-imagenet`: colour tokens
come from the frozen ImageNet backbone, whose features also reach the heads), fed RGB-D or RGB
only, and `tst-mae-imagenet`, TST-MAE continued the same way (its RGB-only twin); and the generalist
baselines: the ImageNet EfficientNet-Lite0 (`tst_ros.models.generalist`) under the same heads and budget,
frozen (`generalist`) and fine-tuned end to end with layer-wise decay (`generalist-finetuned`).
Rows named `(self-trained)` also learn, over the second half of transfer, from the test
building's recorded frames, pseudo-labeled (never the held-out ones; `ROW_TRANSFER`), and the
`(fused self-training)` rows with each pixel's label fused across the frames that see its voxel
(`tst_ros.perception.view_fusion`; `light`: the last 30 % of the steps, a quarter of each batch); the
`(input dropout)` row trains with depth read as missing on 30 % of the samples; `(heads first)` rows train
the heads alone on the held encoder for the first third of the steps (LP-FT; `short heads first`: a tenth);
`(no copy-paste)` rows transfer without the default copy-paste augmentation (`transfer.paste`, 0.5 of the
samples), `(copy-paste 1.0)` and `(copy-paste 0.25)` with it in that share of the samples; `tst-mm-imagenet
(no pre-training[; rgb input | ; rgb-d stems...])` transfers that encoder as built, never pre-trained: what masked
modeling adds;
`(tokens to heads...)` rows use preset `tiny-imagenet-tokens`, whose heads read the transformer's tokens only
(the ImageNet map reaches them through the transformer alone), so what pre-training put there cannot be bypassed;
`(rgb-d stems)` uses preset `tiny-imagenet-rgbd`, whose depth tokens also come from an ImageNet backbone
(`...; both maps to heads`: `tiny-imagenet-rgbd-maps`, the default, whose heads read that backbone's map too;
`...; rgb input` transfers and serves it with colour alone (`...; depth predicted`: its depth predicted from that
colour by the pre-training's own depth decoder, `tst_ros.models.cross_modal`; `colour-only samples`: half the
pre-training samples show colour alone, so the decoders learn to predict from it), `...; lr 5e-3` transfers it at
that rate, `...; depth slopes` uses `tiny-imagenet-rgbd-slopes`, whose depth backbone reads depth's slopes as two of its colours).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


# (row, pre-training (a PRETRAININGS key, or "generalist": the ImageNet EfficientNet-Lite0 of
# tst_ros.models.generalist), transfer inputs (None: the encoder's camera images), labeled set
# used for transfer, encoder fine-tuning (None: the budget's))
ROWS = [("scratch", "scratch", None, "other", None), ("tst-mae", "tst-mae", None, "other", None),
        ("tst-mm", "tst-mm", None, "other", None), ("tst-mm (rgb input)", "tst-mm", ["rgb"], "other", None),
        ("oracle", "tst-mm", None, "oracle", None),
        ("tst-mm+teachers", "tst-mm+teachers", None, "other", None),
        ("tst-mm+teachers (targets only)", "tst-mm+teacher-targets", None, "other", None),
        ("tst-mm (4x steps)", "tst-mm-4x", None, "other", None),
        ("tst-mm+teachers (targets only; 4x steps)", "tst-mm+teacher-targets-4x", None, "other", None),
        ("tst-mm (other buildings)", "tst-mm-other-buildings", None, "other", None),
        ("tst-mm-adapted", "tst-mm-adapted", None, "other", None),
        ("tst-mm-imagenet", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (rgb input)", "tst-mm-imagenet", ["rgb"], "other", None),
        ("tst-mm-imagenet (no pre-training)", "tst-mm-imagenet-untrained", None, "other", None),
        ("tst-mm-imagenet (no pre-training; rgb input)", "tst-mm-imagenet-untrained", ["rgb"], "other", None),
        ("tst-mm-imagenet+teachers (targets only)", "tst-mm-imagenet+teacher-targets", None, "other", None),
        ("tst-mm-imagenet (mixed frames)", "tst-mm-imagenet-mixed", None, "other", None),
        ("tst-mm-imagenet (self-trained)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (fused self-training)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (fused self-training light)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (repeat factor)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (input dropout)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (weight EMA)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (building style)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (building masked modeling)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (heads first)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (short heads first)", "tst-mm-imagenet", None, "other", None),
        ("tst-mm-imagenet (no copy-paste)", "tst-mm-imagenet", None, "other", None),
        *[(f"tst-mm-imagenet (copy-paste {share})", "tst-mm-imagenet", None, "other", None)
          for share in ("1.0", "0.25")],
        ("tst-mae-imagenet", "tst-mae-imagenet", None, "other", None),
        ("tst-mm-imagenet (tokens to heads)", "tst-mm-imagenet-tokens", None, "other", None),
        ("tst-mm-imagenet (tokens to heads; rgb input)", "tst-mm-imagenet-tokens", ["rgb"], "other", None),
        ("tst-mm-imagenet (no pre-training; tokens to heads)", "tst-mm-imagenet-untrained-tokens", None, "other", None),
        ("tst-mae-imagenet (tokens to heads)", "tst-mae-imagenet-tokens", None, "other", None),
        ("tst-mm-imagenet (rgb-d stems)", "tst-mm-imagenet-rgbd", None, "other", None),
        ("tst-mm-imagenet (rgb-d stems; both maps to heads)", "tst-mm-imagenet-rgbd-maps", None, "other", None),
        ("tst-mm-imagenet (rgb-d stems; both maps to heads; rgb input)", "tst-mm-imagenet-rgbd-maps", ["rgb"],
         "other", None),
        ("tst-mm-imagenet (rgb-d stems; both maps to heads; rgb input; depth predicted)", "tst-mm-imagenet-rgbd-maps",
         ["rgb"], "other", None),
        ("tst-mm-imagenet (rgb-d stems; both maps to heads; colour-only samples; rgb input; depth predicted)",
         "tst-mm-imagenet-rgbd-maps-colour-only", ["rgb"], "other", None),
        ("tst-mm-imagenet (rgb-d stems; both maps to heads; lr 5e-3)", "tst-mm-imagenet-rgbd-maps", None, "other",
         None),
        ("tst-mm-imagenet (rgb-d stems; both maps to heads; depth slopes)", "tst-mm-imagenet-rgbd-slopes", None,
         "other", None),
        ("tst-mm-imagenet (no pre-training; rgb-d stems; both maps to heads)", "tst-mm-imagenet-untrained-rgbd-maps",
         None, "other", None),
        ("generalist", "generalist", None, "other", None),
        ("generalist-finetuned", "generalist", None, "other", "full"),
        ("generalist-finetuned (self-trained)", "generalist", None, "other", "full"),
        ("generalist-finetuned (building style)", "generalist", None, "other", "full"),
        ("generalist-finetuned (heads first)", "generalist", None, "other", "full"),
        ("generalist-finetuned (no copy-paste)", "generalist", None, "other", "full")]
# rows whose transfer differs from the default in these TransferConfig fields (each described, with
# what it measured, in docs/BENCHMARKS.md)
ROW_TRANSFER = {"tst-mm-imagenet (self-trained)": {"self_training": 0.5},
                "tst-mm-imagenet (fused self-training)": {"self_training": 0.5, "pseudo_fusion": 0.1},
                "tst-mm-imagenet (fused self-training light)": {"self_training": 0.3, "pseudo_share": 0.25,
                                                                "pseudo_fusion": 0.1},
                "tst-mm-imagenet (repeat factor)": {"repeat_factor": 0.3},
                "tst-mm-imagenet (input dropout)": {"input_drop": 0.3},
                "tst-mm-imagenet (weight EMA)": {"ema": 0.99},
                "generalist-finetuned (self-trained)": {"self_training": 0.5},
                "tst-mm-imagenet (building style)": {"building_style": 0.5},
                "tst-mm-imagenet (building masked modeling)": {"building_mm": 1.0},
                "generalist-finetuned (building style)": {"building_style": 0.5},
                "tst-mm-imagenet (heads first)": {"heads_first": 0.33},
                "tst-mm-imagenet (short heads first)": {"heads_first": 0.1},
                "generalist-finetuned (heads first)": {"heads_first": 0.33},
                "tst-mm-imagenet (no copy-paste)": {"paste": 0.0},
                "tst-mm-imagenet (rgb-d stems; both maps to heads; lr 5e-3)": {"lr": 5e-3},
                **{f"tst-mm-imagenet (rgb-d stems; both maps to heads; {pre}rgb input; depth predicted)":
                   {"predict_inputs": ["depth"]} for pre in ("", "colour-only samples; ")},
                "generalist-finetuned (no copy-paste)": {"paste": 0.0},
                **{f"tst-mm-imagenet (copy-paste {share})": {"paste": float(share)} for share in ("1.0", "0.25")}}
# `--serving-variants`: label -> (batch-norm statistics from the building's store, flip averaging, share of the
# fine-tuning kept in the encoder's weights (`tst_ros.perception.interpolation`), zoom averaging of segmentation
# (`ServingModel`)), each set explicitly whatever the transfer default (the plain row is served as transferred)
SERVING_VARIANTS = {"no flip": (False, False, 1.0, 1.0), "flip": (False, True, 1.0, 1.0),
                    "building BN, no flip": (True, False, 1.0, 1.0), "building BN + flip": (True, True, 1.0, 1.0),
                    "encoder 0.5": (False, True, 0.5, 1.0), "encoder 0.7": (False, True, 0.7, 1.0),
                    "encoder 0.85": (False, True, 0.85, 1.0), "flip + zoom 1.5": (False, True, 1.0, 1.5),
                    "flip + zoom 2": (False, True, 1.0, 2.0)}


@dataclass(frozen=True)
class Pretraining:
    """One pre-training of the table: `modalities` None = the method's default, "sensors+teachers" = the
    default plus every teacher modality; `data` "store" = the test building's unlabeled store, "source_store" =
    other buildings' (never the test style), "mixed_store" = the test building's frames plus as many from the
    transfer set's buildings; `init` = the PRETRAININGS key whose encoder it continues from (TST-MM adapted);
    `steps_factor` x the budget's steps (0: the encoder as built); `preset` the encoder's (`tiny-imagenet`: colour
    tokens from the frozen ImageNet backbone; None: the budget's plain ViT, `tiny` unless `--preset` names another);
    `colour_only_share` that share of the samples shows colour alone (`pretrain.colour_only_share`)."""
    method: str
    modalities: str | list[str] | None = None
    data: str = "store"
    init: str | None = None
    steps_factor: int = 1
    teachers_target_only: bool = False
    preset: str | None = None
    colour_only_share: float = 0.0


PRETRAININGS = {"scratch": Pretraining("scratch"), "tst-mae": Pretraining("tst-mae"), "tst-mm": Pretraining("tst-mm"),
                "tst-mm+teachers": Pretraining("tst-mm", "sensors+teachers"),
                "tst-mm+teacher-targets": Pretraining("tst-mm", "sensors+teachers", teachers_target_only=True),
                "tst-mm-4x": Pretraining("tst-mm", steps_factor=4),
                "tst-mm+teacher-targets-4x": Pretraining("tst-mm", "sensors+teachers", steps_factor=4,
                                                         teachers_target_only=True),
                "tst-mm-other-buildings": Pretraining("tst-mm", data="source_store", steps_factor=2),
                "tst-mm-adapted": Pretraining("tst-mm", init="tst-mm-other-buildings"),
                "tst-mm-imagenet": Pretraining("tst-mm", preset="tiny-imagenet"),
                "tst-mm-imagenet-untrained": Pretraining("tst-mm", preset="tiny-imagenet", steps_factor=0),
                "tst-mm-imagenet+teacher-targets": Pretraining("tst-mm", "sensors+teachers", teachers_target_only=True,
                                                               preset="tiny-imagenet"),
                "tst-mm-imagenet-mixed": Pretraining("tst-mm", data="mixed_store", preset="tiny-imagenet"),
                "tst-mae-imagenet": Pretraining("tst-mae", preset="tiny-imagenet")}
PRETRAININGS.update({f"{key}-tokens": replace(PRETRAININGS[key], preset="tiny-imagenet-tokens")
                     for key in ("tst-mm-imagenet", "tst-mm-imagenet-untrained", "tst-mae-imagenet")})
PRETRAININGS.update({f"tst-mm-imagenet-{name}": replace(PRETRAININGS["tst-mm-imagenet"], preset=f"tiny-imagenet-{name}")
                     for name in ("rgbd", "rgbd-maps", "rgbd-slopes")})
PRETRAININGS["tst-mm-imagenet-rgbd-maps-colour-only"] = replace(PRETRAININGS["tst-mm-imagenet-rgbd-maps"],
                                                                colour_only_share=0.5)
PRETRAININGS["tst-mm-imagenet-untrained-rgbd-maps"] = replace(PRETRAININGS["tst-mm-imagenet-untrained"],
                                                              preset="tiny-imagenet-rgbd-maps")
