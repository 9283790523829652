"""Training-time augmentation of labeled transfer batches, applied at network resolution after
the one preprocessing path: random zoom-in crops (inputs, label map and boxes cropped alike and
resized back), colour jitter of the colour image (per-channel gain and a shared brightness
shift, in intensity units), building style (a sample's colour image given the low-frequency
amplitude spectrum of one of the test building's own frames, after Fourier domain adaptation:
its lighting, tint and exposure, while the phase keeps the labeled content), input dropout
(a sample's non-colour inputs, e.g. depth, read as "no measurement", so the heads cannot lean
on them alone) and copy-paste (objects of another labeled image, every input and label with
them, pasted where they stood: objects meet other rooms and come up more often). Detection
targets of zoomed and pasted samples are rebuilt from their boxes; the other augmentations
leave the cached ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from tst_ros import modalities as registry

MIN_VISIBLE = 0.25          # a cropped box keeps at least this share of its area, else it is dropped
# building style: spatial frequencies up to this share of the image side (both axes) take the
# building frame's amplitudes (0.03 at 128 px: a 7x7 window around the mean colour)
STYLE_BAND = 0.03


@dataclass(frozen=True)
class Augmentation:
    zoom: float = 0.0        # crops cover 1 / (1 + U(0, zoom)) of each side, resized back to the input size
    colour: float = 0.0      # gains U(1 - c, 1 + c) per channel, brightness U(-c/2, c/2), intensities clipped to [0, 1]
    input_drop: float = 0.0  # share of samples whose non-colour inputs are all "no measurement" (normalised 0)
    style: float = 0.0       # share of samples restyled by a building frame's low-frequency amplitudes
    paste: float = 0.0       # share of samples given objects of another labeled image (copy-paste)

    def __post_init__(self) -> None:
        if self.zoom < 0 or not all(0 <= v < 1 for v in (self.colour, self.input_drop)) or \
                not all(0 <= v <= 1 for v in (self.style, self.paste)):
            raise ValueError(f"augmentation zoom must be >= 0, colour and input_drop in [0, 1), style and paste in "
                             f"[0, 1], got {self.zoom}, {self.colour}, {self.input_drop}, {self.style}, {self.paste}")

    @property
    def active(self) -> bool:
        return self.zoom > 0 or self.colour > 0 or self.input_drop > 0 or self.style > 0 or self.paste > 0

    @property
    def per_sample(self) -> bool:
        """Whether samples change geometry or objects, so that their detection targets are rebuilt."""
        return self.zoom > 0 or self.paste > 0


def zoom_crop(inputs: dict[str, np.ndarray], semantic: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
              scale: float, corner: tuple[float, float]) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """One sample's inputs {name: (C, H, W)}, label map (H, W) and boxes (K, 4) xyxy cropped to
    a window 1/scale of each side at the relative `corner` (each in [0, 1]) and resized back.
    Inputs are resampled as the registry says (`resampled_nearest`), labels by nearest."""
    h, w = semantic.shape
    ch, cw = max(1, round(h / scale)), max(1, round(w / scale))
    y0, x0 = round(corner[0] * (h - ch)), round(corner[1] * (w - cw))

    def crop(image: np.ndarray, nearest: bool) -> np.ndarray:
        part = image[..., y0:y0 + ch, x0:x0 + cw]
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        if part.ndim == 2:
            return cv2.resize(part, (w, h), interpolation=interp)
        return np.stack([cv2.resize(c, (w, h), interpolation=interp) for c in part])

    out = {n: crop(x, nearest=registry.resampled_nearest(n)) for n, x in inputs.items()}
    sem = crop(semantic.astype(np.int32), nearest=True).astype(semantic.dtype)
    gain = np.array([w / cw, h / ch] * 2, np.float32)
    moved = (boxes - np.array([x0, y0, x0, y0], np.float32)) * gain
    clipped = np.clip(moved, 0, [w, h, w, h]).astype(np.float32)
    area = lambda b: np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)  # noqa: E731
    keep = area(clipped) >= MIN_VISIBLE * np.maximum(area(moved), 1e-6)
    return out, sem, clipped[keep], labels[keep]


def _intensities(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalised colour images (..., 3, H, W) -> intensities in [0, 1] units."""
    return images * std.reshape(-1, 1, 1) + mean.reshape(-1, 1, 1)


def _normalised(intensity: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((intensity - mean.reshape(-1, 1, 1)) / std.reshape(-1, 1, 1)).astype(np.float32)


def jitter_colour(image: np.ndarray, mean: np.ndarray, std: np.ndarray, gains: np.ndarray,
                  brightness: float) -> np.ndarray:
    """A normalised colour image (3, H, W) with its intensities scaled per channel, shifted and
    clipped to [0, 1], normalised again."""
    intensity = np.clip(_intensities(image, mean, std) * gains.reshape(-1, 1, 1) + brightness, 0.0, 1.0)
    return _normalised(intensity, mean, std)


def zoom_sample(zoom: float, rng: np.random.Generator, inputs: dict, semantic: np.ndarray, boxes: np.ndarray,
                labels: np.ndarray):
    """One sample zoomed in with probability 1/2 by 1 + U(0, zoom) at a random place."""
    if zoom > 0 and rng.random() < 0.5:
        return zoom_crop(inputs, semantic, boxes, labels, 1.0 + rng.uniform(0.0, zoom), (rng.random(), rng.random()))
    return inputs, semantic, boxes, labels


def paste_objects(target: tuple, source: tuple, thing_class_ids: list[int], rng: np.random.Generator,
                  keep: float = 0.5) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Copy-paste: each object of `source` kept with probability `keep` is pasted into `target`
    where it stood, on every input and the label map; both are (inputs {name: (C, H, W)}, label
    map (H, W), boxes (K, 4) xyxy, thing channels (K,)) at the same resolution. An object is the
    pixels of its class inside its box. Target boxes left under MIN_VISIBLE of their area are dropped."""
    inputs, semantic, boxes, labels = target
    src_inputs, src_semantic, src_boxes, src_labels = source
    chosen = rng.random(len(src_boxes)) < keep
    mask = np.zeros(semantic.shape, bool)
    for box, channel in zip(src_boxes[chosen], src_labels[chosen]):
        region = _box_region(box)
        mask[region] |= src_semantic[region] == thing_class_ids[int(channel)]
    if not mask.any():
        return target
    under = [mask[_box_region(b)] for b in boxes]
    covered = np.array([u.mean() if u.size else 1.0 for u in under])     # a box without pixels counts as hidden
    visible = covered <= 1.0 - MIN_VISIBLE
    pasted = {n: np.where(mask, src_inputs[n], x).astype(x.dtype) for n, x in inputs.items()}
    return (pasted, np.where(mask, src_semantic, semantic).astype(semantic.dtype),
            np.concatenate([boxes[visible], src_boxes[chosen]]).astype(np.float32),
            np.concatenate([labels[visible], src_labels[chosen]]).astype(labels.dtype))


def _box_region(box: np.ndarray) -> tuple[slice, slice]:
    """The (rows, columns) of the pixels an xyxy box touches."""
    x0, y0, x1, y1 = box
    return slice(int(y0), int(np.ceil(y1))), slice(int(x0), int(np.ceil(x1)))


def jitter_batch(images: np.ndarray, mean: np.ndarray, std: np.ndarray, colour: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Normalised colour images (B, 3, H, W), each with its own gains and brightness drawn from `rng`."""
    out = np.empty_like(images)
    for k, image in enumerate(images):
        gains = rng.uniform(1 - colour, 1 + colour, 3).astype(np.float32)
        out[k] = jitter_colour(image, mean, std, gains, rng.uniform(-colour / 2, colour / 2))
    return out


def drop_inputs(inputs: dict[str, np.ndarray], share: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Normalised batches {name: (B, C, H, W)} with every non-colour input of a random `share`
    of the samples set to 0, what an invalid measurement normalises to."""
    others = [n for n in inputs if n != registry.PRIMARY_IMAGE]
    if share <= 0 or not others:
        return inputs
    dropped = rng.random(len(next(iter(inputs.values())))) < share
    out = dict(inputs)
    for name in others:
        out[name] = np.where(dropped[:, None, None, None], np.float32(0.0), inputs[name]).astype(np.float32, copy=False)
    return out


@lru_cache(maxsize=8)
def _low_band(shape: tuple[int, int], band: float) -> np.ndarray:
    """(H, W) mask of the unshifted 2-D spectrum: frequencies within `band` of the side on both axes."""
    h, w = shape
    reach = max(1, int(band * min(h, w)))
    fy, fx = np.abs(np.fft.fftfreq(h) * h), np.abs(np.fft.fftfreq(w) * w)
    mask = (fy[:, None] <= reach) & (fx[None, :] <= reach)
    mask.setflags(write=False)             # cached: shared by every call
    return mask


def style_amplitudes(images: np.ndarray, mean: np.ndarray, std: np.ndarray, band: float = STYLE_BAND) -> np.ndarray:
    """The style source: normalised colour images (N, 3, H, W) -> their low-band amplitude
    spectra (N, 3, K) (K: the frequencies of `_low_band`)."""
    spectra = np.abs(np.fft.fft2(_intensities(images.astype(np.float64), mean, std)))
    return spectra[..., _low_band(tuple(images.shape[-2:]), band)].astype(np.float32)


def restyle(image: np.ndarray, mean: np.ndarray, std: np.ndarray, amplitudes: np.ndarray,
            band: float = STYLE_BAND) -> np.ndarray:
    """A normalised colour image (3, H, W) whose low-band amplitudes are replaced by `amplitudes`
    (3, K) of another image, phases kept; intensities clipped to [0, 1], normalised again."""
    spectrum = np.fft.fft2(_intensities(image.astype(np.float64), mean, std))
    low = _low_band(tuple(image.shape[-2:]), band)
    part = spectrum[..., low]
    spectrum[..., low] = amplitudes * np.exp(1j * np.angle(part))
    return _normalised(np.clip(np.fft.ifft2(spectrum).real, 0.0, 1.0), mean, std)


def restyle_batch(images: np.ndarray, mean: np.ndarray, std: np.ndarray, amplitudes: np.ndarray, share: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Normalised colour images (B, 3, H, W), a random `share` of them each restyled by a random
    row of `amplitudes` (`style_amplitudes` of the building's frames)."""
    out = images.copy()
    for k in np.flatnonzero(rng.random(len(images)) < share):
        out[k] = restyle(images[k], mean, std, amplitudes[rng.integers(0, len(amplitudes))])
    return out
