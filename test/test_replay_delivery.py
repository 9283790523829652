"""`tst-ros replay` delivers before it exits, over real DDS between separate processes: every
message of a 30-frame simulator bag reaches a reliable subscriber in another process (at the
recorded timing and as fast as possible), a replay cut short by --duration delivers what it
published, and a truncated bag publishes what precedes the damage, then exits non-zero."""
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from polling import wait_for
from tst_ros.data.bagio import BagReadError, read_messages

PEER = Path(__file__).with_name("replay_counter_peer.py")
TST_ROS = [sys.executable, "-m", "tst_ros.cli"]
SMALL = ["--set", "sim.width=128", "--set", "sim.height=96"]


def readable_counts(bag: Path) -> Counter:
    """Messages per topic that can be read from a bag, up to any damage."""
    counts = Counter()
    try:
        for m in read_messages(bag):
            counts[m.topic] += 1
    except BagReadError:
        pass
    return counts


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay_delivery")
    subprocess.run(TST_ROS + ["sim", "export", "--out", str(root / "bag"), "--frames", "30"] + SMALL,
                   check=True, capture_output=True, timeout=300)
    shutil.copytree(root / "bag", root / "cut")
    (mcap,) = (root / "cut").glob("*.mcap")
    os.truncate(mcap, mcap.stat().st_size // 2)
    return root / "bag", root / "cut"


def published_per_topic(replay) -> Counter:
    """What the replay says it published, per topic (its last log line)."""
    return Counter(json.loads(re.search(r"per topic: (\{.*\})", replay.stderr).group(1)))


def replay_to_peer(bag: Path, tmp_path: Path, *replay_args: str):
    """Runs `tst-ros replay` while a peer process counts what it receives; returns the replay's
    completed process and the peer's counts once they equal what the replay published (or time out)."""
    counts_file = tmp_path / "counts.json"
    peer_log = open(tmp_path / "peer.log", "w")
    peer = subprocess.Popen([sys.executable, str(PEER), str(bag), str(counts_file)], stdin=subprocess.PIPE,
                            stdout=peer_log, stderr=subprocess.STDOUT)
    def counts():
        return Counter(json.loads(counts_file.read_text())) if counts_file.exists() else Counter()

    try:
        wait_for(counts_file.exists, 60, "the peer to subscribe")
        replay = subprocess.run(TST_ROS + ["replay", str(bag), "--wait-for-subscribers", "60",
                                           "--ack-timeout", "60", *replay_args],
                                capture_output=True, text=True, timeout=300)
        expected = published_per_topic(replay)
        try:
            wait_for(lambda: counts() == expected, 60, "every replayed message at the peer")
        except AssertionError as e:
            raise AssertionError(f"{e}: got {dict(counts())}, replay published {dict(expected)}\n"
                                 f"replay log:\n{replay.stderr[-3000:]}") from None
    finally:
        peer.stdin.close()
        try:
            peer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            peer.kill()
        peer_log.close()
    return replay, counts()


@pytest.mark.parametrize("rate", ["1.0", "0"])
def test_replay_delivers_every_message_to_a_reliable_subscriber_in_another_process(bags, tmp_path, rate):
    bag, _ = bags
    replay, received = replay_to_peer(bag, tmp_path, "--rate", rate)
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert received["/camera/color/camera_info"] == 30 and received["/camera/color/image_raw"] == 30
    assert received["/camera/depth/image_raw"] == 30 and received["/odom"] == 30
    assert received == readable_counts(bag)
    assert "every subscriber acknowledged every message" in replay.stderr


def test_truncated_bag_publishes_what_precedes_the_damage_and_exits_non_zero(bags, tmp_path):
    _, cut = bags
    readable = readable_counts(cut)
    assert 0 < readable["/camera/color/image_raw"] < 30
    replay, received = replay_to_peer(cut, tmp_path)
    assert replay.returncode == 1, replay.stderr[-3000:]
    assert received == readable
    assert "replay stopped" in replay.stderr and "truncated or corrupt" in replay.stderr
    assert f"published the {sum(readable.values())} messages read before the damage" in replay.stderr


def test_replay_stopped_by_duration_delivers_what_it_published(bags, tmp_path):
    bag, _ = bags
    replay, received = replay_to_peer(bag, tmp_path, "--duration", "1.5")
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert 0 < received["/camera/color/image_raw"] < 30
    assert received == published_per_topic(replay)
    assert "every subscriber acknowledged every message" in replay.stderr
