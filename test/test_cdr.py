"""Direct CDR writing (tst_ros.ros.cdr) against rclpy's own (de)serialization of the same types
(vision_msgs/Detection2DArray, sensor_msgs/Image)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("rclpy")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose  # noqa: E402

from tst_ros.ros.cdr import detections_cdr  # noqa: E402
from tst_ros.ros.conversions import make_header  # noqa: E402


def built_with_rclpy(stamp_ns, frame_id, boxes, scores, labels) -> Detection2DArray:
    header = make_header(stamp_ns, frame_id)
    detections = []
    for (x0, y0, x1, y1), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        det = Detection2D(header=header)
        det.bbox.center.position.x, det.bbox.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
        det.bbox.size_x, det.bbox.size_y = x1 - x0, y1 - y0
        result = ObjectHypothesisWithPose()
        result.hypothesis.class_id, result.hypothesis.score = str(label), score
        det.results.append(result)
        detections.append(det)
    return Detection2DArray(header=header, detections=detections)


# frame ids of every length mod 4 and class ids of 1-3 digits move the 8-byte alignment of
# the scores and boxes around; 0 detections is the empty sequence
@pytest.mark.parametrize("count,frame_id",
                         [(0, "c"), (1, ""), (3, "ab"), (10, "camera_color_optical_frame"), (7, "cam")])
def test_detections_cdr_decodes_to_the_message_rclpy_builds(count, frame_id):
    rng = np.random.default_rng(count)
    xy = rng.uniform(0, 200, (count, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 50, (count, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, count).astype(np.float32)
    labels = rng.choice([0, 7, 42, 130], count)
    stamp_ns = 1_700_000_123_456_789_012
    written = detections_cdr(stamp_ns, frame_id, boxes, scores, labels)
    expected = built_with_rclpy(stamp_ns, frame_id, boxes, scores, labels)
    decoded = deserialize_message(written, Detection2DArray)
    assert decoded == expected
    # the same layout as rclpy's own writer for the type (its padding bytes are not zeroed: size only)
    assert len(written) == len(serialize_message(expected))
    assert [d.results[0].pose.pose.orientation.w for d in decoded.detections] == [1.0] * count


def test_detections_cdr_carries_each_frame_alone():
    one = np.array([[1, 2, 3, 4]], np.float32)
    first = deserialize_message(detections_cdr(10**9, "f", np.repeat(one, 3, 0), np.ones(3, np.float32),
                                               np.arange(3)), Detection2DArray)
    second = deserialize_message(detections_cdr(2 * 10**9, "f", one, np.ones(1, np.float32), np.array([5])),
                                 Detection2DArray)
    assert len(first.detections) == 3 and len(second.detections) == 1
    assert second.header.stamp.sec == 2 and second.detections[0].header.stamp.sec == 2
    assert second.detections[0].results[0].hypothesis.class_id == "5"


@pytest.mark.parametrize("encoding,shape,dtype,frame_id", [("rgb8", (5, 7, 3), np.uint8, "cam"),
                                                           ("16UC1", (4, 6), np.uint16, "camera_depth"),
                                                           ("32FC1", (3, 5), np.float32, "")])
def test_image_from_cdr_reads_what_rclpy_serialized_without_copying_pixels(encoding, shape, dtype, frame_id):
    from rclpy.serialization import serialize_message

    from tst_ros.ros.cdr import image_from_cdr
    from tst_ros.ros.images import array_to_image, image_to_array

    pixels = np.random.default_rng(0).integers(0, 200, shape).astype(dtype)
    msg = array_to_image(pixels, encoding, make_header(1_700_000_000_123_456_789, frame_id))
    data = serialize_message(msg)
    image = image_from_cdr(data)
    assert image.header == msg.header
    assert (image.height, image.width, image.encoding, image.is_bigendian, image.step) == \
        (msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step)
    assert np.array_equal(image_to_array(image), pixels)
    assert image.data.obj is data                                 # a view of the received buffer


def test_image_from_cdr_reads_padded_rows_and_big_endian_buffers():
    from tst_ros.ros.cdr import image_from_cdr
    from tst_ros.ros.images import image_to_array

    rows = np.arange(12, dtype=">u2").reshape(3, 4)
    step = 10                                                      # 8 bytes of pixels + 2 of padding per row
    padded = b"".join(r.tobytes() + b"\xee\xee" for r in rows)
    # big-endian CDR: header stamp, frame_id "f", height, width, encoding, is_bigendian, step, data
    body = (struct.pack(">iI", 7, 8) + struct.pack(">I", 2) + b"f\x00" + b"\x00\x00" + struct.pack(">II", 3, 4)
            + struct.pack(">I", 6) + b"16UC1\x00" + b"\x01" + b"\x00"
            + struct.pack(">I", step) + struct.pack(">I", len(padded)) + padded)
    image = image_from_cdr(b"\x00\x00\x00\x00" + body)
    assert (image.header.stamp.sec, image.header.stamp.nanosec, image.header.frame_id) == (7, 8, "f")
    assert (image.height, image.width, image.encoding, image.is_bigendian, image.step) == (3, 4, "16UC1", 1, step)
    assert np.array_equal(image_to_array(image), rows.astype(np.uint16))


def test_image_from_cdr_names_what_is_wrong_with_a_malformed_buffer():
    from rclpy.serialization import serialize_message

    from tst_ros.ros.cdr import image_from_cdr
    from tst_ros.ros.images import array_to_image

    data = serialize_message(array_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8", make_header(0, "cam")))
    with pytest.raises(ValueError, match="runs past the end"):
        image_from_cdr(data[:-5])                                  # pixels cut off
    with pytest.raises(ValueError, match="truncated"):
        image_from_cdr(data[:14])                                  # cut inside the header
    with pytest.raises(ValueError, match="cannot hold"):
        image_from_cdr(b"\x00")
    with pytest.raises(ValueError, match="not plain CDR"):
        image_from_cdr(b"\x00\x07" + data[2:])
    broken = bytearray(data)
    broken[4 + 8 + 4 + 3] = ord("x")                               # frame_id "cam\0" loses its NUL
    with pytest.raises(ValueError, match="NUL-terminated"):
        image_from_cdr(bytes(broken))


@pytest.mark.parametrize("encoding,shape,dtype", [("mono8", (6, 9), np.uint8), ("rgb8", (4, 5, 3), np.uint8),
                                                  ("16UC1", (3, 7), np.uint16), ("32FC1", (5, 2), np.float32)])
def test_image_cdr_decodes_to_the_image_array_to_image_builds(encoding, shape, dtype):
    from sensor_msgs.msg import Image

    from tst_ros.ros.cdr import image_cdr
    from tst_ros.ros.images import array_to_image

    pixels = np.random.default_rng(1).integers(0, 250, shape).astype(dtype)
    strided = np.repeat(pixels, 2, axis=1)[:, ::2]                 # not contiguous: must be packed
    decoded = deserialize_message(image_cdr(12_000_000_345, "cam", encoding, strided), Image)
    assert decoded == array_to_image(pixels, encoding, make_header(12_000_000_345, "cam"))


def test_image_cdr_rejects_an_array_that_does_not_fit_the_encoding():
    from tst_ros.ros.cdr import image_cdr

    with pytest.raises(ValueError, match="does not fit encoding"):
        image_cdr(0, "cam", "rgb8", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="does not match encoding"):
        image_cdr(0, "cam", "mono8", np.zeros((4, 4), np.float32))


def test_restamp_cdr_changes_only_the_header_stamp():
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    from tst_ros.data.bagio import cdr_header_stamp_ns, restamp_cdr
    from tst_ros.ros.images import array_to_image

    msg = array_to_image(np.arange(24, dtype=np.uint8).reshape(2, 4, 3), "rgb8", make_header(5, "cam"))
    restamped = restamp_cdr(serialize_message(msg), 1_700_000_000_000_000_007)
    assert cdr_header_stamp_ns(restamped) == 1_700_000_000_000_000_007
    msg.header = make_header(1_700_000_000_000_000_007, "cam")
    assert deserialize_message(restamped, Image) == msg
