"""Test peer process: record simulator frames into a store through the recording pipeline,
committing every sample and printing "written SEQ" once it is durable. Runs until killed.

usage: store_crash_peer.py DATASET START_FRAME
"""
import sys

from tst_ros.config import RecordConfig, SimConfig
from tst_ros.data.from_sim import push_frame
from tst_ros.data.decoders import ArrayDecoder
from tst_ros.data.pipeline import RecordingPipeline, open_store
from tst_ros.sim import Simulator


def main() -> int:
    dataset, start = sys.argv[1], int(sys.argv[2])
    sim = Simulator(SimConfig(width=96, height=72, cloud_rate_hz=5.0))
    cfg = RecordConfig(image_size=48, shard_samples=7)
    store = open_store(dataset, cfg, {"kind": "sim"})
    pipeline = RecordingPipeline(store, cfg, ArrayDecoder(), T_base_camera=sim.T_base_camera, commit_every=1)
    reported = len(store)
    print(f"open {reported}", flush=True)
    for frame in sim.frames(None, start=start):
        push_frame(pipeline, frame, sim.intrinsics)
        for seq in range(reported, len(store)):   # len(store) counts committed samples only
            print(f"written {seq}", flush=True)
        reported = len(store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
