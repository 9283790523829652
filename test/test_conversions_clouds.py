"""sensor_msgs/PointCloud2 <-> structured numpy: any field set, offsets, padding, organized clouds, bad input."""
import array

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField

from tst_ros.ros.clouds import array_to_cloud, cloud_field, cloud_rgb, cloud_to_array, cloud_xyz, make_xyz_rgb_cloud
from tst_ros.ros.conversions import make_header

RNG = np.random.default_rng(3)


def random_fill(points):
    for name in points.dtype.names:
        base = points.dtype[name].base
        shape = points[name].shape
        if base.kind == "f":
            points[name] = RNG.normal(size=shape)
        else:
            info = np.iinfo(base)
            points[name] = RNG.integers(info.min, info.max, size=shape, endpoint=True)
    return points


def assert_fields_equal(a, b):
    assert a.shape == b.shape and a.dtype.names == b.dtype.names
    for name in a.dtype.names:
        assert a.dtype[name] == b.dtype[name], name
        bits_a, bits_b = (np.ascontiguousarray(x[name]).view(np.uint8) for x in (a, b))
        assert np.array_equal(bits_a, bits_b), name


# Every PointField datatype, a fixed-size array field, gaps between fields and trailing padding.
ALL_TYPES = np.dtype({
    "names": ["x", "y", "z", "i8", "u8", "i16", "u16", "i32", "label", "f64", "normal"],
    "formats": ["<f4", "<f4", "<f4", "i1", "u1", "<i2", "<u2", "<i4", "<u4", "<f8", ("<f4", (3,))],
    "offsets": [0, 4, 8, 16, 17, 18, 20, 24, 28, 32, 40],
    "itemsize": 64,
})


def test_every_datatype_with_offsets_and_padding_round_trips():
    points = random_fill(np.zeros(257, ALL_TYPES))
    msg = array_to_cloud(points, make_header(42, "camera_color_optical_frame"))
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 257, 64, 64 * 257)
    assert msg.header.frame_id == "camera_color_optical_frame" and not msg.is_bigendian
    layout = {f.name: (f.offset, f.datatype, f.count) for f in msg.fields}
    assert layout["i8"] == (16, PointField.INT8, 1) and layout["u16"] == (20, PointField.UINT16, 1)
    assert layout["label"] == (28, PointField.UINT32, 1) and layout["f64"] == (32, PointField.FLOAT64, 1)
    assert layout["normal"] == (40, PointField.FLOAT32, 3)
    back = cloud_to_array(msg)
    assert_fields_equal(back, points)
    assert np.shares_memory(back, np.frombuffer(msg.data, np.uint8))
    assert np.array_equal(cloud_field(msg, "normal"), points["normal"])
    assert np.array_equal(cloud_xyz(msg), np.stack([points[c] for c in "xyz"], axis=1))


def test_xyz_rgb_cloud_with_label_and_confidence():
    n = 1000
    xyz = RNG.normal(size=(n, 3)).astype(np.float32)
    xyz[5] = np.nan
    rgb = RNG.integers(0, 256, size=(n, 3), dtype=np.uint8)
    label = RNG.integers(0, 2**32, size=n, dtype=np.uint32)
    confidence = RNG.random(n).astype(np.float32)
    msg = make_xyz_rgb_cloud(xyz, rgb, make_header(7, "cam"),
                             extra={"label": label, "confidence": confidence})
    types = {f.name: f.datatype for f in msg.fields}
    assert types == {"x": PointField.FLOAT32, "y": PointField.FLOAT32, "z": PointField.FLOAT32,
                     "rgb": PointField.FLOAT32, "label": PointField.UINT32, "confidence": PointField.FLOAT32}
    assert msg.is_dense is False
    assert np.array_equal(cloud_xyz(msg), xyz, equal_nan=True)
    assert np.array_equal(cloud_rgb(msg), rgb)
    assert np.array_equal(cloud_field(msg, "label"), label)
    assert np.array_equal(cloud_field(msg, "confidence"), confidence)
    packed = cloud_field(msg, "rgb").view(np.uint32)
    assert packed[0] == (int(rgb[0, 0]) << 16) | (int(rgb[0, 1]) << 8) | int(rgb[0, 2])
    assert make_xyz_rgb_cloud(np.zeros((3, 3), np.float32)).is_dense is True


def test_cloud_xyz_keeps_nan_payloads_bit_exact():
    # x y z + 4-byte field = the 16-byte layout read in one pass; 20 bytes takes the general path.
    bits = RNG.integers(0, 2**32, size=(500, 3), dtype=np.uint32)
    bits[::7, 0] = 0x7FC00001
    xyz = bits.view(np.float32)
    for extra in ({}, {"label": np.arange(500, dtype=np.uint32)}):
        msg = make_xyz_rgb_cloud(xyz, np.zeros((500, 3), np.uint8), extra=extra)
        assert np.array_equal(cloud_xyz(msg).view(np.uint32), bits)


def raw_cloud(points, row_pad=0):
    """Organized cloud assembled byte by byte with `row_pad` bytes after every row."""
    h, w = points.shape
    rows = points.view(np.uint8).reshape(h, w * points.dtype.itemsize)
    data = np.concatenate([rows, np.full((h, row_pad), 0xCD, np.uint8)], axis=1)
    template = array_to_cloud(points[:1, :1])
    return PointCloud2(height=h, width=w, fields=template.fields, is_bigendian=False,
                       point_step=points.dtype.itemsize, row_step=data.shape[1], is_dense=False,
                       data=array.array("B", data.tobytes()))


@pytest.mark.parametrize("row_pad", [0, 5, 32])
def test_organized_cloud_with_row_padding(row_pad):
    pcl_layout = np.dtype({"names": ["x", "y", "z", "rgb"], "formats": ["<f4"] * 4,
                           "offsets": [0, 4, 8, 16], "itemsize": 32})
    points = random_fill(np.zeros((4, 6), pcl_layout))
    msg = raw_cloud(points, row_pad)
    back = cloud_to_array(msg)
    assert back.shape == (4, 6)
    assert_fields_equal(back, points)
    xyz = cloud_xyz(msg)
    assert xyz.shape == (24, 3) and np.array_equal(xyz[7], [points[1, 1][c] for c in "xyz"])
    assert np.array_equal(cloud_field(msg, "rgb"), points["rgb"].reshape(-1))


def test_organized_array_to_cloud_sets_height_and_width():
    points = random_fill(np.zeros((3, 5), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")])))
    msg = array_to_cloud(points)
    assert (msg.height, msg.width, msg.row_step) == (3, 5, 60)
    assert_fields_equal(cloud_to_array(msg), points)


def test_big_endian_fields_are_written_little_endian():
    points = np.zeros(4, np.dtype([("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("label", ">u4")]))
    points["x"], points["label"] = [1, 2, 3, 4], [10, 20, 30, 2**31]
    back = cloud_to_array(array_to_cloud(points))
    assert back.dtype["x"] == np.dtype("<f4") and np.array_equal(back["label"], [10, 20, 30, 2**31])


def small_cloud():
    return make_xyz_rgb_cloud(np.zeros((4, 3), np.float32), np.zeros((4, 3), np.uint8))


def test_big_endian_cloud_is_rejected():
    msg = small_cloud()
    msg.is_bigendian = True
    with pytest.raises(ValueError, match="big-endian"):
        cloud_to_array(msg)


def test_missing_xyz_fields_are_rejected():
    points = np.zeros(3, np.dtype([("x", "<f4"), ("y", "<f4"), ("intensity", "<f4")]))
    msg = array_to_cloud(points)
    with pytest.raises(ValueError, match=r"no z field.*fields: x, y, intensity"):
        cloud_xyz(msg)
    with pytest.raises(ValueError, match="no field 'label'"):
        cloud_field(msg, "label")
    with pytest.raises(ValueError, match="rgb"):
        cloud_rgb(msg)


def test_row_step_and_data_length_are_checked():
    msg = small_cloud()
    msg.row_step = msg.point_step * 4 - 1
    with pytest.raises(ValueError, match="row_step 63 is smaller than width"):
        cloud_to_array(msg)
    msg = small_cloud()
    msg.data = msg.data[:-3]
    with pytest.raises(ValueError, match=r"data length 61 does not match row_step \* height"):
        cloud_to_array(msg)


def test_bad_fields_are_rejected():
    msg = small_cloud()
    msg.fields[3].datatype = 99
    with pytest.raises(ValueError, match="'rgb' has unknown PointField datatype 99"):
        cloud_to_array(msg)
    msg = small_cloud()
    msg.fields[3].offset = 14
    with pytest.raises(ValueError, match="'rgb'.*extends past point_step 16"):
        cloud_to_array(msg)
    with pytest.raises(ValueError, match="structured array"):
        array_to_cloud(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="'stamp' has dtype int64"):
        array_to_cloud(np.zeros(2, np.dtype([("x", "<f4"), ("stamp", "<i8")])))
    with pytest.raises(ValueError, match=r"xyz must have shape \(N, 3\)"):
        make_xyz_rgb_cloud(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="extra field 'label'"):
        make_xyz_rgb_cloud(np.zeros((4, 3), np.float32), extra={"label": np.zeros(3, np.uint32)})


def test_empty_cloud_converts_to_empty_arrays():
    msg = make_xyz_rgb_cloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8))
    assert cloud_to_array(msg).shape == (0,)
    assert cloud_xyz(msg).shape == (0, 3)
