"""`tst-ros bench ttt-kd`: TTT-KD mIoU before/after adaptation, step timings, node rate.

1. Train backbone + projectors on source buildings (SOURCE_STYLES, seeds >= 1000) with the
   given 2D teacher (`teacher`: hed by default, imagenet, or any `make_teacher` spec).
2. mIoU on every input point after k = 0, 1, 3, 10 episodic distillation steps, on three scene
   groups of 10 scenes each (5 with `quick`): "source_style" (unseen seeds in the training
   styles: the model's own distribution), "home" (the test building's style, seeds 0..9) and
   "home_shifted" (the same buildings under shifted lighting, palette, noise and furniture).
   A PNG of mIoU vs k is written.
   The learning rate and k are selected on the source-style scenes only (`selected.*`); the
   test groups' gains are reported at that choice. With a class-probability teacher (`seg:`)
   its own labels projected onto the same points are scored too (`*.teacher_labels.miou`).
   `seeds` repeats training and scoring per seed (`seeds.*`: mean and std of the gains).
3. Time per adaptation step and per prediction at 20k and 100k points (network on all points,
   no downsampling), and per cloud end-to-end with the default point budget.
4. The ttt_kd node at its defaults (online) on 1 Hz clouds of 20k points over real DDS: output rate.
"""
from __future__ import annotations

import importlib
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tst_ros.config import SimConfig, TTTKDConfig

KS = [0, 1, 3, 10]
PLOT_DIR = Path(os.environ.get("TST_BENCH_DIR", "bench"))


def cpu_threads() -> int:
    """All cores on an idle machine; one thread when other work already loads the CPU (OpenMP
    barriers spin, so two threads on a contended 2-core machine run several times slower)."""
    cores = os.cpu_count() or 1
    return 1 if os.getloadavg()[0] > 0.75 * cores else cores


def _settings(quick: bool) -> dict:
    if quick:
        return dict(buildings=2, clouds_per_building=4, train_steps=80, scenes=5, clouds=1, point_budget=4000,
                    timing_repeats=1, node_clouds=6, extra_lrs=[])
    return dict(buildings=8, clouds_per_building=8, train_steps=500, scenes=10, clouds=2, point_budget=8000,
                timing_repeats=2, node_clouds=20, extra_lrs=[3e-5, 1e-4, 5e-4, 1e-3, 2e-3])


def _groups(scenes: int) -> dict[str, list[SimConfig]]:
    from tst_ros.sim import SOURCE_STYLES
    return {
        "source_style": [SimConfig(seed=2000 + i, style=SOURCE_STYLES[i % len(SOURCE_STYLES)]) for i in range(scenes)],
        "home": [SimConfig(seed=i, style="home") for i in range(scenes)],
        "home_shifted": [SimConfig(seed=i, style="home_shifted") for i in range(scenes)],
    }


def _plot(curves: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tst_ros.util import atomic_write

    fig, ax = plt.subplots(figsize=(7.0, 3.8), dpi=110)
    groups = list(dict.fromkeys(name.split(".")[-1] for name in curves))
    variants = list(dict.fromkeys(name.rsplit(".", 1)[0] if name.startswith("lr") else "" for name in curves))
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "v"), ((0, (5, 1, 1, 1, 1, 1)), "D"), ((0, (1, 3)), "x")]
    for name, values in curves.items():
        colour = f"C{groups.index(name.split('.')[-1])}"
        line, marker = styles[variants.index(name.rsplit(".", 1)[0] if name.startswith("lr") else "") % len(styles)]
        ax.plot(KS, [100 * v for v in values], marker=marker, color=colour, label=name, linestyle=line)
    ax.set_xlabel("adaptation steps k (episodic, per cloud)")
    ax.set_ylabel("point mIoU (%)")
    ax.set_xticks(KS)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _big_cloud(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n real sim points (several full-resolution frames in one odom-anchored frame)."""
    from tst_ros import geometry
    from tst_ros.sim import Simulator

    sim = Simulator(SimConfig(seed=seed, style="home", cloud_stride=1))
    ref = None
    xyz, rgb = [], []
    index = 0
    while sum(len(x) for x in xyz) < n:
        f = sim.frame(index * sim.cloud_every)
        T = f.T_odom_base @ sim.T_base_camera
        ref = T if ref is None else ref
        xyz.append(geometry.transform(geometry.invert(ref) @ T, f.cloud_xyz.astype(np.float64)).astype(np.float32))
        rgb.append(f.cloud_rgb)
        index += 3
    xyz, rgb = np.concatenate(xyz), np.concatenate(rgb)
    pick = np.random.default_rng(seed).choice(len(xyz), n, replace=False)
    return xyz[pick], rgb[pick], ref


def _timings(model, reducer, budget: int, repeats: int, adapt_label_head: bool) -> dict:
    """Adaptation step and prediction time on all N points, and end-to-end per cloud with the budget."""
    from tst_ros.tttkd.adapt import TestTimeAdapter

    out = {}
    for n in (20_000, 100_000):
        xyz, rgb, T = _big_cloud(n)
        full = TestTimeAdapter(model, reducer, steps=1, point_budget=0, adapt_label_head=adapt_label_head)
        batch = full.prepare(xyz, rgb, T)
        targets = torch.randn(n, reducer.out_dim)
        valid = torch.ones(n, dtype=torch.bool)
        full.adapt(batch, targets, valid, 1)                   # warm-up
        t0 = time.perf_counter()
        full.adapt(batch, targets, valid, repeats)
        step = (time.perf_counter() - t0) / repeats
        t0 = time.perf_counter()
        for _ in range(repeats):
            with torch.no_grad():
                model(batch)
        pred = (time.perf_counter() - t0) / repeats
        full.restore()
        # end-to-end with the default budget: downsample, 3 steps (targets from a feature map), predict, propagate
        from tst_ros.tttkd.projection import View
        from tst_ros.geometry import Intrinsics
        intr = Intrinsics.from_fov(256, 192, 70.0)
        view = View(torch.randn(reducer.in_dim, 24, 32), T, intr, None)
        budgeted = TestTimeAdapter(model, reducer, steps=3, point_budget=budget,
                                   adapt_label_head=adapt_label_head)
        t0 = time.perf_counter()
        info = budgeted.process(xyz, rgb, T, [view]).info
        e2e = time.perf_counter() - t0
        key = f"{n // 1000}k"
        out.update({f"timing.{key}.adapt_step_s": round(step, 4), f"timing.{key}.predict_s": round(pred, 4),
                    f"timing.{key}.cloud_k3_budget_s": round(e2e, 3),
                    f"timing.{key}.budget_points": int(info.get("adapt_points", 0))})
    return out


def _node_rate(checkpoint: Path, clouds: int, budget: int) -> dict:
    from tst_ros.sim import Simulator

    try:
        online = importlib.import_module("tst_ros.ros.bench.ttt_kd_online")
    except ImportError as e:  # ROS not installed: the rest of the benchmark still runs
        return {"node.skipped": f"rclpy unavailable: {e}"}
    defaults = TTTKDConfig()             # the node as it runs by default
    sim = Simulator(SimConfig(seed=0, style="home", cloud_stride=1))
    frames = []
    rng = np.random.default_rng(0)
    for i in range(clouds):
        f = sim.frame(i * sim.cloud_every)
        pick = rng.choice(len(f.cloud_xyz), min(20_000, len(f.cloud_xyz)), replace=False)
        stamps = [f.stamp_ns + int(dt * 1e9) for dt in (-0.2, -0.1, 0.0, 0.05)]
        frames.append({"stamp_ns": f.stamp_ns, "xyz": f.cloud_xyz[pick], "rgb_cloud": f.cloud_rgb[pick],
                       "rgb": f.rgb, "depth_mm": f.depth_mm, "poses": [(sim.T_odom_base(s), s) for s in stamps]})
    r = online.measure_online_rate(str(checkpoint), frames, sim.intrinsics, sim.T_base_camera, rate_hz=1.0,
                                   steps=defaults.steps, stride=defaults.stride, point_budget=budget)
    points = len(frames[0]["xyz"])
    out = {f"node.{k}": (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
    out.update({"node.points_per_cloud": points, "node.mode": "online", "node.stride": defaults.stride,
                "node.steps": defaults.steps, "node.lr": defaults.lr, "node.target_hz": 1.0,
                "node.meets_target": bool(r["received"] >= r["sent"] - 1 and r["output_rate_hz"] >= 0.9)})
    return out


def select_on_source(figures: dict, lrs: list[float], default_lr: float) -> dict:
    """The learning rate and k with the best source-style gain (chosen on source scenes only)
    and the test groups' gains at that choice."""
    def prefix(lr: float, group: str) -> str:
        return group if lr == default_lr else f"lr{lr:g}.{group}"

    gain = lambda lr, k, g: figures[f"{prefix(lr, g)}.miou.k{k}"] - figures[f"{prefix(lr, g)}.miou.k0"]  # noqa: E731
    lr, k = max(((lr, k) for lr in lrs for k in KS), key=lambda c: (round(gain(*c, "source_style"), 6), -c[1]))
    return {"selected.lr": lr, "selected.k": k, "selected.source_style_gain": round(gain(lr, k, "source_style"), 4),
            "selected.home_gain": round(gain(lr, k, "home"), 4),
            "selected.home_shifted_gain": round(gain(lr, k, "home_shifted"), 4)}


def _train(cfg, tmp: str) -> tuple[dict, str]:
    """Joint training on the source buildings -> (train.* figures, checkpoint path)."""
    from tst_ros.tttkd.train import run_training

    t0 = time.perf_counter()
    summary = run_training(cfg, SimConfig(), tmp, show_bar=True)
    figures = {"train.wall_s": round(time.perf_counter() - t0, 1),
               "train.seg_loss_start": round(summary["seg_loss_start"], 3),
               "train.seg_loss_end": round(summary["seg_loss_end"], 3),
               "train.distill_loss_start": round(summary["distill_loss_start"], 3),
               "train.distill_loss_end": round(summary["distill_loss_end"], 3),
               "train.valid_projection_fraction": round(summary["valid_fraction"], 3)}
    return figures, summary["checkpoint"]


def _group_clouds(teacher, s: dict) -> dict:
    """The evaluation clouds of each scene group with the teacher's views (the same for every seed)."""
    from tst_ros.tttkd.train import scene_clouds

    return {name: [c for sc in configs for c in scene_clouds(sc, teacher, s["clouds"], first_cloud=2, spacing=5)]
            for name, configs in _groups(s["scenes"]).items()}


def _evaluate(model, reducer, clouds: dict, lrs: list[float], cfg) -> tuple[dict, dict]:
    """mIoU after k = KS steps for every group and learning rate -> (figures, curves)."""
    from tqdm import tqdm

    from tst_ros.sim import CLASSES
    from tst_ros.tttkd.adapt import TestTimeAdapter
    from tst_ros.tttkd.evaluate import evaluate_clouds, teacher_label_miou

    figures, curves = {}, {}
    t0 = time.perf_counter()
    with tqdm(total=sum(len(v) for v in clouds.values()) * len(lrs), desc="eval clouds", leave=False) as bar:
        for name, group in clouds.items():
            for lr in lrs:
                adapter = TestTimeAdapter(model, reducer, steps=max(KS), lr=lr, point_budget=cfg.point_budget,
                                          voxel_size=cfg.voxel_size, adapt_label_head=cfg.adapt_label_head)
                reports = evaluate_clouds(adapter, group, KS, len(CLASSES), CLASSES, progress=bar)
                prefix = name if lr == cfg.lr else f"lr{lr:g}.{name}"
                curves[prefix] = [reports[k]["miou"] for k in KS]
                for k in KS:
                    figures[f"{prefix}.miou.k{k}"] = round(reports[k]["miou"], 4)
                    figures[f"{prefix}.point_acc.k{k}"] = round(reports[k]["pixel_accuracy"], 4)
                figures[f"{prefix}.gain_k10"] = round(curves[prefix][-1] - curves[prefix][0], 4)
                figures[f"{prefix}.best_gain"] = round(max(curves[prefix]) - curves[prefix][0], 4)
            if model.distill_into_labels:
                direct = teacher_label_miou(group, len(CLASSES), cfg.occlusion_tol)
                figures[f"{name}.teacher_labels.miou"] = round(direct["miou"], 4)
                figures[f"{name}.teacher_labels.seen_fraction"] = round(direct["seen_fraction"], 4)
            figures[f"{name}.clouds"] = len(group)
    figures["eval.wall_s"] = round(time.perf_counter() - t0, 1)
    figures.update(select_on_source(figures, lrs, cfg.lr))
    figures["shift.miou_drop_k0"] = round(curves["home"][0] - curves["home_shifted"][0], 4)
    figures["shift.gain_k10_shifted_minus_home"] = round(figures["home_shifted.gain_k10"] - figures["home.gain_k10"], 4)
    return figures, curves


def _seed_summary(per_seed: list[dict], seeds: list[int]) -> dict:
    """Mean and std over training seeds of the gains at each seed's source-selected (lr, k)."""
    out = {"seeds": ",".join(map(str, seeds))}
    for key in ("source_style_gain", "home_gain", "home_shifted_gain"):
        values = np.array([f[f"selected.{key}"] for f in per_seed])
        out[f"seeds.selected.{key}.mean"] = round(float(values.mean()), 4)
        out[f"seeds.selected.{key}.std"] = round(float(values.std()), 4)
        out[f"seeds.selected.{key}.per_seed"] = [round(float(v), 4) for v in values]
    for group in ("source_style", "home", "home_shifted"):
        k0 = np.array([f[f"{group}.miou.k0"] for f in per_seed])
        out[f"seeds.{group}.miou.k0.mean"] = round(float(k0.mean()), 4)
    out["seeds.selected"] = [f"lr {f['selected.lr']:g}, k {f['selected.k']}" for f in per_seed]
    return out


def run(quick: bool = False, teacher: str = "hed", seeds: list[int] | None = None) -> dict:
    """The benchmark; `seeds` trains and scores one point network per seed (the first seed's
    figures keep the unprefixed keys, `seeds.*` holds mean and std of the selected gains)."""
    from tst_ros.sim import SOURCE_STYLES
    from tst_ros.tttkd.checkpoint import load_checkpoint
    from tst_ros.tttkd.teachers import teacher_from_description

    s = _settings(quick)
    threads = cpu_threads()
    torch.set_num_threads(threads)
    seeds = list(seeds) if seeds else [TTTKDConfig().seed]
    cfg = replace(TTTKDConfig(), buildings=s["buildings"], clouds_per_building=s["clouds_per_building"],
                  train_steps=s["train_steps"], point_budget=s["point_budget"], device="cpu", teacher=teacher)
    figures: dict = {"teacher": teacher, "backbone": cfg.backbone, "train.source_styles": ",".join(SOURCE_STYLES),
                     "train.buildings": cfg.buildings, "train.clouds": cfg.buildings * cfg.clouds_per_building,
                     "train.steps": cfg.train_steps, "point_budget": cfg.point_budget, "adapt.lr": cfg.lr,
                     "ks": ",".join(map(str, KS)), "torch_threads": threads,
                     "load_average_1min": round(os.getloadavg()[0], 2)}
    lrs = [cfg.lr] + [lr for lr in s["extra_lrs"] if lr != cfg.lr]
    per_seed, clouds = [], None
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="tttkd_bench_") as tmp:
            trained, checkpoint = _train(replace(cfg, seed=seed), tmp)
            model, reducer, meta = load_checkpoint(checkpoint)
            if clouds is None:
                clouds = _group_clouds(teacher_from_description(meta["teacher"]), s)
            scored, curves = _evaluate(model, reducer, clouds, lrs, cfg)
            per_seed.append(scored)
            if len(per_seed) == 1:
                figures.update({**trained, **scored, "distill_into_labels": model.distill_into_labels,
                                "seed": seed, **{f"{n}.scenes": s["scenes"] for n in clouds}})
                figures.update(_plot_and_time(model, reducer, curves, checkpoint, s, cfg, teacher, quick))
    if len(seeds) > 1:
        figures.update(_seed_summary(per_seed, seeds))
    return figures


def _plot_and_time(model, reducer, curves: dict, checkpoint: str, s: dict, cfg, teacher_spec: str,
                   quick: bool) -> dict:
    """The mIoU-vs-k plot, step timings and the node's rate (first seed only)."""
    teacher_name = teacher_spec.split(":")[0]
    suffix = "" if teacher_spec == "hed" else "_" + teacher_name
    plot_path = PLOT_DIR / f"ttt_kd_miou_vs_k{suffix}{'_quick' if quick else ''}.png"
    _plot(curves, plot_path, f"TTT-KD ({teacher_name} teacher, {cfg.backbone}), {s['scenes']} scenes x {s['clouds']} "
                             f"clouds per group{' [quick]' if quick else ''}")
    figures = {"plot": str(plot_path)}
    t0 = time.perf_counter()
    figures.update(_timings(model, reducer, cfg.point_budget, s["timing_repeats"], cfg.adapt_label_head))
    figures["timing.wall_s"] = round(time.perf_counter() - t0, 1)
    figures.update(_node_rate(Path(checkpoint), s["node_clouds"], cfg.point_budget))
    return figures
