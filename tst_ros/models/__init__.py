"""TST models: the multimodal ViT encoder and the TST-MM masked-modeling wrapper.

Public API:
    build_encoder(preset, modalities, image_size, patch) -> Encoder (random init = `scratch`)
    load_encoder(path, device="cpu") -> (Encoder, meta)   path: run dir or encoder .safetensors
    save_encoder(encoder, path, **meta)
    build_tstmm(encoder_or_preset, ...) -> TSTMM (encoder + masking + decoders + losses)
    PRESETS: preset name -> {embed_dim, depth, heads[, stem]}
"""
from tst_ros.models.io import ENCODER_FILE, load_encoder, read_metadata, save_encoder
from tst_ros.models.vit import PRESETS, Encoder, build_encoder


def build_tstmm(*args, **kwargs):
    from tst_ros.models.multimae import build_tstmm as _build
    return _build(*args, **kwargs)


__all__ = ["PRESETS", "Encoder", "ENCODER_FILE", "build_encoder", "load_encoder", "save_encoder",
           "read_metadata", "build_tstmm"]
