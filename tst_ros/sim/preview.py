"""A PNG contact sheet for a person to look at: per sampled frame RGB, depth, normals,
semantics, 2D boxes and a top view of the cloud over the floor plan and path."""
from __future__ import annotations

import os

import numpy as np

from tst_ros import modalities as registry
from tst_ros.sim.classes import CLASSES, UNLABELED


def class_colors() -> np.ndarray:
    """(256, 3) float colours per class id (unlabeled black)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    cols = np.zeros((256, 3))
    for i in range(len(CLASSES)):
        cols[i] = cmap(i % 20)[:3]
    cols[UNLABELED] = 0
    return cols


def contact_sheet(sim, out: str | os.PathLike, frames: int = 4, start: int = 0, stride: int = 0) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    from tst_ros.geometry import transform
    from tst_ros.util import atomic_write

    lap = int(sim.trajectory.period_s * sim.cfg.camera_rate_hz)
    stride = stride or max(1, lap // frames)
    colors = class_colors()
    path_xy = sim.trajectory.sample_xy(0.05)
    fig, axes = plt.subplots(frames, 6, figsize=(22, 3.3 * frames), squeeze=False)
    for row in range(frames):
        idx = start + row * stride
        idx -= idx % sim.cloud_every if sim.cloud_every else 0  # a frame that carries a cloud
        f = sim.frame(idx)
        ax = axes[row]
        ax[0].imshow(f.rgb)
        ax[0].set_title(f"frame {idx}  t={sim.time_s(f.stamp_ns):.1f}s  RGB")
        d = registry.physical(registry.DEPTH_IMAGE, f.depth_mm)
        im = ax[1].imshow(d, cmap="turbo", vmin=0, vmax=sim.style.max_range_m)
        ax[1].set_title(f"depth (m), holes {100 * (f.depth_mm == 0).mean():.1f}%")
        fig.colorbar(im, ax=ax[1], fraction=0.035)
        ax[2].imshow((f.gt["normals"] * 0.5 + 0.5).clip(0, 1))
        ax[2].set_title("normals (camera frame)")
        ax[3].imshow(colors[f.gt["semantic"]])
        present = [c for c in np.unique(f.gt["semantic"]) if c != UNLABELED]
        ax[3].set_title("semantics")
        handles = [patches.Patch(color=colors[c], label=CLASSES[c]) for c in present]
        ax[3].legend(handles=handles, fontsize=6, loc="lower right", ncol=2, framealpha=0.7)
        ax[4].imshow(f.rgb)
        for x0, y0, x1, y1, c, _ in f.gt["boxes"]:
            ax[4].add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.2,
                                              ec=colors[int(c)]))
            ax[4].text(x0, y0, CLASSES[int(c)], fontsize=6, color="white", va="bottom",
                       bbox={"fc": colors[int(c)], "alpha": 0.7, "pad": 0.5, "lw": 0})
        ax[4].set_title(f"2D boxes ({len(f.gt['boxes'])})")
        _floor_plan(ax[5], sim)
        ax[5].plot(path_xy[:, 0], path_xy[:, 1], "-", color="0.6", lw=0.8)
        if f.cloud_xyz is not None and len(f.cloud_xyz):
            pts = transform(f.gt["T_odom_camera"], f.cloud_xyz.astype(np.float64))
            ax[5].scatter(pts[:, 0], pts[:, 1], s=0.3, c=f.cloud_rgb / 255.0)
        pose = f.T_odom_base
        ax[5].arrow(pose[0, 3], pose[1, 3], 0.6 * pose[0, 0], 0.6 * pose[1, 0], width=0.05, color="red")
        ax[5].set_aspect("equal")
        ax[5].set_title("cloud top view (odom), path")
        for a in ax[:5]:
            a.axis("off")
    b = sim.building
    fig.suptitle(f"seed {sim.cfg.seed}, style {sim.cfg.style}: {len(b.rooms)} rooms "
                 f"({', '.join(r.kind for r in b.rooms)}), {len(b.objects)} objects, {sim.scene.n_triangles} triangles")
    fig.tight_layout()

    def save(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=70)
    atomic_write(out, save)
    plt.close(fig)
    return str(out)


def _floor_plan(ax, sim) -> None:
    for obj in sim.building.objects:
        for fp in obj.footprints:
            c, s = np.cos(fp.yaw), np.sin(fp.yaw)
            corners = np.array([[-fp.hx, -fp.hy], [fp.hx, -fp.hy], [fp.hx, fp.hy], [-fp.hx, fp.hy], [-fp.hx, -fp.hy]])
            xy = corners @ np.array([[c, s], [-s, c]]) + (fp.cx, fp.cy)
            ax.plot(xy[:, 0], xy[:, 1], "-", color="k" if obj.name == "wall" else "tab:blue", lw=0.6)
