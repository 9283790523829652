"""CLI: `tst-ros ingest BAG --out DATASET`, `tst-ros replay BAG`, `tst-ros dataset info|teach|from-sim`."""
from __future__ import annotations

import json
import logging

from tst_ros import config


def register(sub) -> None:
    p = sub.add_parser("ingest", help="rosbag2 bag (MCAP or sqlite3) -> dataset store, through the recorder's "
                                      "sync and derivation code")
    p.add_argument("bag", help="rosbag2 directory, .mcap or .db3 file")
    p.add_argument("--out", required=True, help="dataset store directory (created, or appended to)")
    p.add_argument("--image-size", type=int, help="training resolution (default: record.image_size)")
    p.add_argument("--max-samples", type=int, help="stop after this many samples (0: all)")
    from tst_ros.data.pipeline import DEFAULT_TOPICS

    for stream, topic in DEFAULT_TOPICS.items():
        p.add_argument(f"--{stream.replace('_', '-')}-topic", dest=f"{stream}_topic",
                       help=f"topic of the {stream} stream (default: {topic})")
    p.add_argument("--camera-extrinsic", type=float, nargs=7, metavar="V",
                   help="T_base_camera as x y z qw qx qy qz (default: the simulator rig's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    config.add_config_arguments(p)
    p.set_defaults(func=run_ingest)

    p = sub.add_parser("replay", help="publish a bag's messages onto the ROS graph with their recorded timing")
    p.add_argument("bag", help="rosbag2 directory, .mcap or .db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (<= 0: as fast as possible)")
    p.add_argument("--loop", action=argparse_bool(), default=False, help="restart after the last message")
    p.add_argument("--start-offset", type=float, default=0.0, help="skip the first SECONDS of the bag")
    p.add_argument("--topics", nargs="*", default=[], help="only these topics (default: all)")
    p.add_argument("--clock", action=argparse_bool(), default=False, help="also publish /clock")
    p.add_argument("--namespace", default="", help="publish the bag's topics under this namespace")
    p.add_argument("--absolute-topics", action=argparse_bool(), default=False,
                   help="keep the recorded (absolute) names instead of moving them under --namespace")
    p.add_argument("--restamp-loops", action=argparse_bool(), default=False,
                   help="shift header stamps on every loop so that time keeps moving forward")
    p.add_argument("--loop-gap", type=float, default=0.0,
                   help="SECONDS between the last message of a pass and the first of the next (e.g. one frame period)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after SECONDS (0: end of bag / never)")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0,
                   help="wait up to SECONDS for a subscriber on every topic before starting")
    p.add_argument("--ack-timeout", type=float, default=10.0,
                   help="before exiting, wait up to SECONDS until every reliable subscriber has acknowledged "
                        "every message (default: 10; 0: only check)")
    p.set_defaults(func=run_replay)

    p = sub.add_parser("dataset", help="inspect or build dataset stores")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    q = dsub.add_parser("info", help="summary of a dataset store")
    q.add_argument("path", help="dataset store directory")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=run_info)
    q = dsub.add_parser("teach", help="compute teacher modalities (frozen networks' outputs) for every "
                                      "sample not taught yet; resumable")
    q.add_argument("path", help="dataset store directory")
    q.add_argument("--teachers", nargs="+", metavar="MODALITY",
                   help="teacher modalities to compute (default: every registered one)")
    q.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    q.add_argument("--redo", action="store_true", help="delete a teacher's stored outputs and teach it again")
    q.add_argument("--json", action="store_true", help="print the report as JSON")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=run_teach)
    q = dsub.add_parser("from-sim", help="write simulator frames into a store (no ROS needed)")
    q.add_argument("--out", required=True, help="dataset store directory (created, or appended to)")
    q.add_argument("--frames", type=int, default=200, help="simulator frames to store")
    q.add_argument("--start", type=int, default=0, help="first simulator frame index")
    q.add_argument("--image-size", type=int, help="training resolution (default: record.image_size)")
    q.add_argument("--ground-truth", action=argparse_bool(), default=True, help="store semantic/instance GT")
    config.add_config_arguments(q)
    q.set_defaults(func=run_from_sim)


def argparse_bool():
    import argparse
    return argparse.BooleanOptionalAction


def _record_cfg(args):
    cfg = config.from_args(args)
    if getattr(args, "image_size", None):
        cfg.record.image_size = args.image_size
    if getattr(args, "max_samples", None) is not None:
        cfg.record.max_samples = args.max_samples
    return cfg


def run_ingest(args) -> int:
    import numpy as np

    from tst_ros.data.ingest import ingest
    from tst_ros.data.pipeline import DEFAULT_TOPICS
    from tst_ros.graph.description import sim_camera_extrinsic
    from tst_ros.poses import extrinsic_to_matrix
    from tst_ros.ros.nodes.recorder import RosDecoder

    cfg = _record_cfg(args)
    topics = {s: getattr(args, f"{s}_topic") for s in DEFAULT_TOPICS if getattr(args, f"{s}_topic")}
    T = extrinsic_to_matrix(args.camera_extrinsic or sim_camera_extrinsic())
    report = ingest(args.bag, args.out, cfg.record, RosDecoder(), topics=topics, T_base_camera=np.asarray(T),
                    progress=not args.no_progress)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"ingested {report['samples']} samples from {report['messages']} messages in {report['seconds']} s "
              f"({report['frames_per_s']} frames/s) into {report['dataset']} ({report['samples_total']} in total)")
        if report["counts"]:
            print("skipped / repaired by reason:")
            for reason, n in report["counts"].items():
                print(f"  {reason:40s} {n}")
    if report["error"]:
        logging.getLogger("tst_ros.ingest").error(
            f"{report['error']}; kept the {report['samples']} samples read before it")
        return 1
    return 0


def run_replay(args) -> int:
    """Runs the replay node; its exit status is 1 when the bag turned out damaged."""
    from tst_ros.ros.nodes.replay import main

    ros_args = ["--ros-args", "-p", f"bag:={args.bag}", "-p", f"rate:={float(args.rate)}",
                "-p", f"loop:={str(args.loop).lower()}", "-p", f"start_offset:={float(args.start_offset)}",
                "-p", f"publish_clock:={str(args.clock).lower()}",
                "-p", f"restamp_loops:={str(args.restamp_loops).lower()}", "-p", f"duration:={float(args.duration)}",
                "-p", f"loop_gap:={float(args.loop_gap)}",
                "-p", f"wait_for_subscribers:={float(args.wait_for_subscribers)}",
                "-p", f"ack_timeout:={float(args.ack_timeout)}",
                "-p", f"absolute_topics:={str(args.absolute_topics).lower()}"]
    if args.namespace:
        ros_args += ["-r", f"__ns:=/{args.namespace.strip('/')}"]
    if args.topics:
        ros_args += ["-p", "topics:=[" + ",".join(f"'{t}'" for t in args.topics) + "]"]
    return main(["tst-ros-replay"] + ros_args)


def run_info(args) -> int:
    from tst_ros.data.store import Store
    from tst_ros.data.teach import taught_counts

    info = Store(args.path, "r").info()
    info["teachers"] = taught_counts(args.path)
    if args.json:
        print(json.dumps(info, default=str))
    else:
        for k, v in info.items():
            print(f"{k:>16}: {v}")
    return 0


def run_teach(args) -> int:
    from tst_ros.data.teach import teach
    from tst_ros.teachers import TeacherUnavailable

    try:
        report = teach(args.path, args.teachers, device=args.device, progress=not args.no_progress,
                       redo=args.redo)
    except (TeacherUnavailable, FileNotFoundError, ValueError, KeyError) as e:
        logging.getLogger("tst_ros.teach").error(str(e).strip("'\""))
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        for r in report["teachers"]:
            print(f"{r['modality']:>12}: {r['taught']} taught now, {r['already']} before, "
                  f"{r['samples']} samples, {r['seconds']} s")
    return 0


def run_from_sim(args) -> int:
    from tst_ros.data.from_sim import build_dataset

    cfg = _record_cfg(args)
    info = build_dataset(cfg.sim, cfg.record, args.frames, args.out, start=args.start,
                         ground_truth=args.ground_truth, progress=True)
    print(json.dumps(info, default=str))
    return 0
