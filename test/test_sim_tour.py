"""The simulator's tour through several buildings: building labels change at the configured
times, each stretch shows that building's own frames, and stamps run on one clock."""
import numpy as np
import pytest

from tst_ros.config import SimConfig
from tst_ros.sim import Simulator
from tst_ros.sim.tour import Building, Tour

CFG = SimConfig(width=32, height=24, camera_rate_hz=10.0, cloud_rate_hz=0.0)
BUILDINGS = ["home:0", "office:1", "loft:2"]


def test_tour_frames_carry_building_labels_that_change_at_the_configured_times():
    tour = Tour(CFG, BUILDINGS, seconds=0.5)
    frames = list(tour.frames(20))
    expected = ["home:0"] * 5 + ["office:1"] * 5 + ["loft:2"] * 5 + ["home:0"] * 5
    assert [f.gt["building"] for f in frames] == expected == tour.labels(20)
    stamps = np.array([f.stamp_ns for f in frames])
    assert (np.diff(stamps) == 100_000_000).all() and stamps[0] == tour.start_ns


def test_each_stretch_is_its_buildings_own_trajectory_continued_on_a_second_visit():
    tour = Tour(CFG, BUILDINGS, seconds=0.5, start_frame=3)
    office = Simulator(SimConfig(**{**vars(CFG), "seed": 1, "style": "office"}))
    assert tour.locate(5) == (1, 3) and tour.locate(16) == (0, 9)
    np.testing.assert_array_equal(tour.frame(5).rgb, office.frame(3).rgb)
    assert not np.array_equal(tour.frame(15).rgb, tour.frame(0).rgb)      # home again, further along


def test_tour_seconds_default_from_the_config_and_bad_buildings_are_refused():
    tour = Tour(SimConfig(**{**vars(CFG), "tour_seconds": 2.0}), [Building("home", 0), "office:4"])
    assert tour.frames_per_building == 20 and tour.label(20) == "office:4"
    with pytest.raises(ValueError, match="style:seed"):
        Building.parse("office:x")
    with pytest.raises((ValueError, KeyError), match="castle"):
        Building.parse("castle:1")


def test_sim_node_drives_the_tour_and_publishes_each_new_building_over_dds():
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from polling import Spinning, wait_for
    from tst_ros.ros.nodes.sim import SimNode
    from tst_ros.ros.qos import qos_latched, qos_profile

    got = {"buildings": [], "images": 0}
    peer = Spinning(lambda ctx: rclpy.create_node("tour_peer", context=ctx))
    peer.node.create_subscription(String, "/sim/building", lambda m: got["buildings"].append(m.data), qos_latched())
    peer.node.create_subscription(Image, "/camera/color/image_raw",
                                  lambda m: got.__setitem__("images", got["images"] + 1), qos_profile("reliable", 50))
    params = {"width": 32, "height": 24, "cloud_rate_hz": 0.0, "realtime": False, "frames": 12,
              "tour": ["home:0", "office:1"], "tour_seconds": 0.4}

    def paused_sim(ctx):            # paused until the peer is matched: no label is published unseen
        node = SimNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()], context=ctx)
        node.set_paused(True)
        return node

    spun = Spinning(paused_sim)
    sim = spun.node
    try:
        wait_for(lambda: sim.pubs["building"].get_subscription_count() and sim.pubs["rgb"].get_subscription_count(),
                 30, "the peer to match the sim's publishers")
        sim.set_paused(False)
        wait_for(lambda: got["images"] == 12 and len(got["buildings"]) == 3, 30, "12 frames and 3 buildings")
        assert got["buildings"] == ["home:0", "office:1", "home:0"]       # 4 frames (0.4 s at 10 Hz) each
        assert sim.sim.labels(12) == ["home:0"] * 4 + ["office:1"] * 4 + ["home:0"] * 4
    finally:
        spun.close()
        peer.close()
