"""Copy-paste augmentation (`transfer.paste`): another labeled image's objects land where they
stood on every input and on the label map, nothing else of that image comes along, boxes they
hide are dropped, and batches of pasted samples carry detection targets of their own boxes."""
from __future__ import annotations

import numpy as np
import pytest

from tst_ros.perception.augment import Augmentation, paste_objects
from tst_ros.perception.heads import detection_targets
from tst_ros.perception.labeled_data import TransferData, load_labeled, mirrored_boxes
from tst_ros.perception.transfer import new_model, resolve_encoder

THINGS = [3, 5]                      # thing channel 0 is class 3, channel 1 is class 5


def _target(size: int = 32):
    semantic = np.zeros((size, size), np.int64)
    semantic[2:10, 2:10] = 3                                    # will be hidden by the pasted object
    semantic[20:30, 20:30] = 5                                  # a corner of it will be hidden
    inputs = {"rgb": np.zeros((3, size, size), np.float32), "depth": np.full((1, size, size), 0.2, np.float32)}
    return inputs, semantic, np.array([[2, 2, 10, 10], [20, 20, 30, 30]], np.float32), np.array([0, 1])


def _source(size: int = 32):
    semantic = np.full((size, size), 1, np.int64)               # floor everywhere ...
    semantic[0:14, 0:14] = 5                                    # ... and one object of class 5
    semantic[18:22, 18:22] = 5
    inputs = {"rgb": np.ones((3, size, size), np.float32), "depth": np.full((1, size, size), 0.9, np.float32)}
    return inputs, semantic, np.array([[0, 0, 14, 14], [18, 18, 22, 22]], np.float32), np.array([1, 1])


def test_pasted_objects_replace_every_input_and_label_where_they_stood_and_nothing_else_moves():
    target, source = _target(), _source()
    inputs, semantic, boxes, labels = paste_objects(target, source, THINGS, np.random.default_rng(0), keep=1.0)
    mask = (source[1] == 5)                                     # both source objects, all of their pixels
    assert np.array_equal(semantic, np.where(mask, source[1], target[1]))
    for name in ("rgb", "depth"):
        assert np.array_equal(inputs[name], np.where(mask, source[0][name], target[0][name]))
    assert (semantic[~mask] == target[1][~mask]).all() and not (semantic == 1).any()   # no floor came along
    # the first target box is hidden whole and dropped; the second keeps most of its area
    assert boxes.tolist() == [[20, 20, 30, 30], [0, 0, 14, 14], [18, 18, 22, 22]] and labels.tolist() == [1, 1, 1]


def test_nothing_kept_leaves_the_target_as_it_was():
    target = _target()
    out = paste_objects(target, _source(), THINGS, np.random.default_rng(0), keep=0.0)
    assert out is target


def test_pasted_batches_carry_detection_targets_of_their_boxes(four_labeled_images):
    items, classes, categories = load_labeled(four_labeled_images)
    encoder, enc_meta = resolve_encoder("scratch", image_size=32, patch=8)
    _, meta = new_model(encoder, enc_meta, classes, categories)
    data = TransferData(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"])
    idx, flips = np.array([0, 1, 2, 3]), np.array([False, True, False, True])
    plain = data.batch(idx, flips)
    pasted = data.batch(idx, flips, np.random.default_rng(1), Augmentation(paste=1.0))
    assert not np.array_equal(pasted["semantic"], plain["semantic"])
    rng = np.random.default_rng(1)                              # the same draws, replayed sample by sample
    for k, (i, flip) in enumerate(zip(idx, flips)):
        assert rng.random() < 1.0
        _, semantic, boxes, labels = paste_objects(data._sample(int(i)), data._sample(int(rng.integers(len(data)))),
                                                   data.thing_class_ids, rng)
        if flip:
            semantic, boxes = semantic[..., ::-1], mirrored_boxes(boxes, data.size[1])
        heat, box, weight = detection_targets(boxes, labels, data.size[0], data.num_things, data.stride)
        assert np.array_equal(pasted["semantic"][k], semantic)
        for name, expected in zip(("heatmap", "box", "box_weight"), (heat, box, weight)):
            assert np.array_equal(pasted[name][k], expected), name


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_paste_share_outside_0_1_is_refused(share):
    with pytest.raises(ValueError, match="paste"):
        Augmentation(paste=share)
