"""Labeled sets as transfer and evaluation read them: COCO categories, items, the registered
camera images of an item in physical units, and `TransferData` (items preprocessed once through
the runtime's one preprocessing path, with detection targets for the plain and mirrored image).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tst_ros import modalities as registry
from tst_ros.geometry import fit_image
from tst_ros.perception.runtime import normalisation, prepare_inputs


def read_categories(labeled_dir: str | Path) -> dict[int, str]:
    """Detection categories {id: name} of a COCO-style labeled set (ids = semantic class ids)."""
    path = Path(labeled_dir) / "instances.json"
    if not path.is_file():
        raise FileNotFoundError(f"{labeled_dir} is not a labeled set (no instances.json)")
    cats = json.loads(path.read_text()).get("categories", [])
    if not cats:
        raise ValueError(f"{path} lists no categories")
    return {int(c["id"]): str(c["name"]) for c in sorted(cats, key=lambda c: int(c["id"]))}


def load_labeled(labeled_dir: str | Path) -> tuple[list[dict], list[str], dict[int, str]]:
    from tst_ros.sim.labeled_set import load

    items, classes = load(str(labeled_dir))
    if not items:
        raise ValueError(f"labeled set {labeled_dir} has no images")
    return items, list(classes), read_categories(labeled_dir)


def depth_metres(item: dict) -> np.ndarray | None:
    d = item.get("depth_mm")
    return None if d is None else registry.physical(registry.DEPTH_IMAGE, d, invalid=0.0)


def extra_images(item: dict, input_modalities: list[str]) -> dict[str, np.ndarray]:
    """A labeled item's other camera images among `input_modalities`, in physical units
    (stored value * the registry's scale: thermal centi-kelvin -> kelvin)."""
    stored = item.get("images", {})
    missing = [n for n in input_modalities if n not in (registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE)
               and n not in stored]
    if missing:
        raise ValueError(f"the model takes {missing} but the labeled set has no such images")
    return {n: registry.physical(n, a, invalid=0.0) for n, a in stored.items() if n in input_modalities}


def mirrored_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """(K, 4) xyxy boxes of an image mirrored left to right."""
    out = boxes.copy()
    out[:, [0, 2]] = width - boxes[:, [2, 0]]
    return out


class TransferData:
    """Labeled items preprocessed once to network resolution (arrays kept in memory)."""

    def __init__(self, items: list[dict], input_modalities: list[str], preprocessing: dict,
                 thing_class_ids: list[int], stride: int = 4):
        from tst_ros.perception.heads import detection_targets

        size = tuple(preprocessing["size"])
        norm = normalisation(preprocessing)
        colour = norm.get(registry.PRIMARY_IMAGE)
        self.colour_norm = None if colour is None else (colour[1], colour[2])   # (mean, std) for jitter
        self.norm = norm
        self.style_amplitudes: np.ndarray | None = None     # building-style augmentation's sources
        channel_of = {cid: i for i, cid in enumerate(thing_class_ids)}
        self.thing_class_ids = list(thing_class_ids)
        self.inputs: dict[str, list[np.ndarray]] = {n: [] for n in input_modalities}
        self.semantic, self.boxes, self.labels = [], [], []
        for it in items:
            if registry.DEPTH_IMAGE in input_modalities and it.get("depth_mm") is None:
                raise ValueError("the model takes depth but the labeled set has no depth images")
            x = prepare_inputs(it["rgb"], depth_metres(it), input_modalities, norm, size,
                               extra_images(it, input_modalities))
            for n in input_modalities:
                self.inputs[n].append(x[n])
            h, w = it["rgb"].shape[:2]
            self.semantic.append(fit_image(it["semantic"], size, nearest=True))
            boxes = np.asarray(it["boxes"], np.float32).reshape(-1, 4) * np.array(
                [size[1] / w, size[0] / h] * 2, np.float32)
            labels = np.asarray(it["labels"], np.int64).reshape(-1)
            keep = np.array([int(c) in channel_of for c in labels], bool)
            self.boxes.append(boxes[keep])
            self.labels.append(np.array([channel_of[int(c)] for c in labels[keep]], np.int64))
        self.inputs = {n: np.stack(v) for n, v in self.inputs.items()}
        self.semantic = np.stack(self.semantic).astype(np.int64)
        self.size = size
        self.num_things = len(thing_class_ids)
        self.stride = stride
        # detection targets for the plain and the horizontally flipped image
        self.targets = {}
        for flip in (False, True):
            hm, bt, bw = [], [], []
            for boxes, labels in zip(self.boxes, self.labels):
                b = mirrored_boxes(boxes, size[1]) if flip else boxes
                t = detection_targets(b, labels, size[0], self.num_things, self.stride)
                hm.append(t[0]); bt.append(t[1]); bw.append(t[2])
            self.targets[flip] = (np.stack(hm), np.stack(bt), np.stack(bw))

    def __len__(self) -> int:
        return len(self.semantic)

    def take_style_from(self, items: list[dict]) -> None:
        """Building-style augmentation's sources: the colour images of `items` (the building's own
        frames) through the same preprocessing, kept as low-band amplitude spectra."""
        from tst_ros.perception.augment import style_amplitudes

        if self.colour_norm is None or not items:
            raise ValueError("building style needs a colour input and at least one building frame")
        colour = np.stack([prepare_inputs(it["rgb"], None, [registry.PRIMARY_IMAGE], self.norm, self.size)
                           [registry.PRIMARY_IMAGE] for it in items])
        self.style_amplitudes = style_amplitudes(colour, *self.colour_norm)

    def class_weights(self, num_classes: int, power: float, max_ratio: float = 50.0) -> np.ndarray:
        """Per-class loss weights ~ (1 / pixel share)^power over the labelled pixels, at most
        `max_ratio` apart, with the pixel-weighted mean 1 (the loss keeps its scale); classes
        absent from the set get the largest weight (they never occur as targets)."""
        counts = np.bincount(self.semantic[self.semantic != 255].ravel(), minlength=num_classes)[:num_classes]
        share = counts / max(1, counts.sum())
        present = share > 0
        weights = np.ones(num_classes)
        if power > 0 and present.any():
            weights[present] = share[present] ** -power
            weights = np.minimum(weights, weights[present].min() * max_ratio)
            weights[~present] = weights[present].max()
            weights /= (weights * share).sum()
        return weights.astype(np.float32)

    def repeat_factors(self, threshold: float) -> np.ndarray:
        """Per-image sampling weights for repeat-factor sampling (as in LVIS): an image weighs
        the largest max(1, sqrt(threshold / f_c)) over the classes c it shows, f_c the share of
        the set's images showing c, so images of classes rarer than `threshold` come up more."""
        classes = np.unique(self.semantic[self.semantic != 255])
        if classes.size == 0:                 # no segmentation labels: every image weighs the same
            return np.ones(len(self.semantic))
        shown = np.stack([(self.semantic == c).any((1, 2)) for c in classes], 1)     # (images, classes)
        per_class = np.maximum(1.0, np.sqrt(threshold / shown.mean(0)))
        return np.where(shown, per_class, 1.0).max(1)

    def batch(self, idx: np.ndarray, flips: np.ndarray, rng: np.random.Generator | None = None,
              augmentation=None) -> dict:
        """Arrays for items `idx`, flipped horizontally where `flips` is True, each first through
        `augmentation` (`tst_ros.perception.augment.Augmentation`, drawn from `rng`) when given."""
        if augmentation is None or not augmentation.active:
            return self._plain_batch(idx, flips)
        if rng is None:
            raise ValueError("augmentation needs a random generator")
        if augmentation.per_sample:          # geometry or objects change: targets rebuilt per sample
            samples = [self._reshaped(int(i), bool(f), rng, augmentation) for i, f in zip(idx, flips)]
            out = {"inputs": {n: np.stack([s["inputs"][n] for s in samples]) for n in self.inputs},
                   **{k: np.stack([s[k] for s in samples]) for k in ("semantic", "heatmap", "box", "box_weight")}}
        else:                                # colour only: the cached targets hold
            out = self._plain_batch(idx, flips)
        if augmentation.style > 0:
            from tst_ros.perception.augment import restyle_batch

            if self.style_amplitudes is None:
                raise ValueError("building style needs the building's frames (TransferData.take_style_from)")
            colour = out["inputs"][registry.PRIMARY_IMAGE]
            out["inputs"][registry.PRIMARY_IMAGE] = restyle_batch(colour, *self.colour_norm, self.style_amplitudes,
                                                                  augmentation.style, rng)
        if augmentation.colour > 0 and self.colour_norm is not None:
            from tst_ros.perception.augment import jitter_batch

            out["inputs"][registry.PRIMARY_IMAGE] = jitter_batch(out["inputs"][registry.PRIMARY_IMAGE],
                                                                 *self.colour_norm, augmentation.colour, rng)
        if augmentation.input_drop > 0:
            from tst_ros.perception.augment import drop_inputs

            out["inputs"] = drop_inputs(out["inputs"], augmentation.input_drop, rng)
        return out

    def _sample(self, i: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
        return {n: v[i] for n, v in self.inputs.items()}, self.semantic[i], self.boxes[i], self.labels[i]

    def _reshaped(self, i: int, flip: bool, rng: np.random.Generator, augmentation) -> dict:
        """Item `i` given another item's objects (a `paste` share of the time), then zoomed and
        flipped, with its detection targets rebuilt."""
        from tst_ros.perception.augment import paste_objects, zoom_sample
        from tst_ros.perception.heads import detection_targets

        sample = self._sample(i)
        if augmentation.paste > 0 and rng.random() < augmentation.paste:
            sample = paste_objects(sample, self._sample(int(rng.integers(len(self)))), self.thing_class_ids, rng)
        inputs, semantic, boxes, labels = zoom_sample(augmentation.zoom, rng, *sample)
        if flip:
            inputs = {n: x[..., ::-1] for n, x in inputs.items()}
            semantic = semantic[..., ::-1]
            boxes = mirrored_boxes(boxes, self.size[1])
        heat, box, weight = detection_targets(boxes, labels, self.size[0], self.num_things, self.stride)
        return {"inputs": inputs, "semantic": semantic, "heatmap": heat, "box": box, "box_weight": weight}

    def _plain_batch(self, idx: np.ndarray, flips: np.ndarray) -> dict:
        def pick(arr):
            out = arr[idx].copy()
            out[flips] = out[flips][..., ::-1]
            return out
        inputs = {n: pick(v) for n, v in self.inputs.items()}
        semantic = pick(self.semantic)
        hm = np.where(flips[:, None, None, None], self.targets[True][0][idx], self.targets[False][0][idx])
        bt = np.where(flips[:, None, None, None], self.targets[True][1][idx], self.targets[False][1][idx])
        bw = np.where(flips[:, None, None], self.targets[True][2][idx], self.targets[False][2][idx])
        return {"inputs": inputs, "semantic": semantic, "heatmap": hm, "box": bt, "box_weight": bw}
