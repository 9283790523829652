"""The offline half of the loop, run by the trainer node as a child process.

pretrain (TST-MM on the recorded store) -> external labeled set (other simulated buildings,
unless the user gives one) -> held-out evaluation set of the test building -> transfer of the
segmentation/detection heads onto the TST-MM encoder and onto a scratch encoder (same budget)
-> ONNX export with parity check -> evaluation of both -> TTT-KD joint training on source
buildings and before/after evaluation -> a `{"event": "model"}` progress line.

Every stage records completion in `pipeline.json`; running again resumes after the last
finished stage (pre-training itself resumes from its checkpoint).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from tst_ros.config import Config
from tst_ros.util import atomic_write_json

STAGES = ["pretrain", "labeled_set", "eval_set", "transfer", "transfer_scratch", "export", "evaluate", "tttkd",
          "tttkd_eval"]


class Progress:
    """Progress protocol lines on stdout (the trainer node parses them) or plain lines on stderr."""

    def __init__(self, jsonl: bool):
        self.jsonl = jsonl

    def stage(self, stage: str, step: int = 0, total: int = 1, message: str = "") -> None:
        if self.jsonl:
            self.line({"stage": stage, "step": step, "total": total, "loss": 0.0, "samples_per_s": 0.0,
                       "eta_s": 0.0, "message": message})
        else:
            print(f"[pipeline] {stage}: {message}", file=sys.stderr)

    def line(self, obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class Pipeline:
    def __init__(self, cfg: Config, run_dir: str | Path, data: str | Path, progress_jsonl: bool = False):
        self.cfg = cfg
        self.run = Path(run_dir)
        self.data = str(data)
        self.progress = Progress(progress_jsonl)
        self.state_path = self.run / "pipeline.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {"done": {}}
        self.metrics_path = self.run / "metrics.json"
        self.metrics = json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}

    # paths of the stages' artifacts
    @property
    def labeled(self) -> Path:
        return Path(self.cfg.transfer.labeled_set) if self.cfg.transfer.labeled_set else self.run / "labeled"

    def _done(self, stage: str, info: dict | None = None) -> None:
        self.state["done"][stage] = {"time": time.time(), **(info or {})}
        atomic_write_json(self.state_path, self.state)
        atomic_write_json(self.metrics_path, self.metrics)

    def run_all(self) -> dict:
        t0 = time.perf_counter()
        for stage in STAGES:
            if stage in self.state["done"]:
                self.progress.stage(stage, 1, 1, "already done (resumed)")
                continue
            self.progress.stage(stage, 0, 1, "starting")
            # stages speak the progress protocol on stdout; the trainer ignores any other line
            info = getattr(self, f"stage_{stage}")()
            self._done(stage, info)
        self.metrics["budget"] = self.budget(time.perf_counter() - t0)
        atomic_write_json(self.metrics_path, self.metrics)
        self.announce()
        return self.metrics

    def budget(self, seconds: float) -> dict:
        c = self.cfg
        return {"pretrain": {"preset": c.pretrain.preset, "method": c.pretrain.method, "steps": c.pretrain.steps,
                             "batch": c.pretrain.batch, "modalities": c.pretrain.modalities, "seed": c.pretrain.seed},
                "transfer": {"steps": c.transfer.steps, "batch": c.transfer.batch, "finetune": c.transfer.finetune,
                             "labeled_images": c.transfer.labeled_images, "seed": c.transfer.seed},
                "ttt_kd": {"backbone": c.ttt_kd.backbone, "teacher": c.ttt_kd.teacher, "k": c.ttt_kd.steps,
                           "train_steps": c.ttt_kd.train_steps},
                "record_frames": c.specialize.record_frames, "pipeline_seconds_this_call": round(seconds, 1)}

    # ----------------------------------------------------------------------------- stages
    def stage_pretrain(self) -> dict:
        from tst_ros.train.pretrain import pretrain

        summary = pretrain(self.cfg.pretrain, self.data, self.run / "pretrain", resume=True,
                           progress_jsonl=self.progress.jsonl, full_config=self.cfg)
        if summary.get("stopped"):
            # checkpoint saved; the stage is not done, the next run resumes it
            raise KeyboardInterrupt(f"pre-training stopped at step {summary.get('step')}")
        return {"steps": summary.get("step")}

    def stage_labeled_set(self) -> dict:
        from tst_ros.sim import labeled_set

        if self.cfg.transfer.labeled_set:
            labeled_set.load(self.labeled)  # validate the user's set early, with a clear error
            return {"source": str(self.labeled)}
        s = self.cfg.sim
        return labeled_set.write(self.labeled, self.cfg.transfer.labeled_images, width=s.width, height=s.height,
                                 progress=not self.progress.jsonl)

    def stage_eval_set(self) -> dict:
        """Frames of the test building the recorder never saw, with ground truth."""
        from tst_ros.sim import labeled_set

        s = self.cfg.sim
        return labeled_set.write(self.run / "eval", self.cfg.specialize.eval_images, styles=[s.style], seed=s.seed,
                                 start_frame=self.cfg.specialize.record_frames, width=s.width, height=s.height,
                                 progress=not self.progress.jsonl)

    def _transfer(self, encoder: str, out: str) -> dict:
        from tst_ros.perception.transfer import transfer

        p = self.cfg.pretrain
        return transfer(encoder, str(self.labeled), str(self.run / out), cfg=self.cfg.transfer, preset=p.preset,
                        image_size=self.cfg.record.image_size, patch=p.patch,
                        progress_stream=sys.stdout if self.progress.jsonl else None,
                        show_bar=not self.progress.jsonl)

    def stage_transfer(self) -> dict:
        return _jsonable(self._transfer(str(self.run / "pretrain"), "model"))

    def stage_transfer_scratch(self) -> dict:
        return _jsonable(self._transfer("scratch", "model_scratch"))

    def stage_export(self) -> dict:
        from tst_ros.perception.export import export_model

        return _jsonable(export_model(self.run / "model", self.run / "deploy"))

    def stage_evaluate(self) -> dict:
        from tst_ros.perception.transfer import evaluate

        segdet = {}
        for name, model in (("tst-mm", self.run / "model"), ("scratch", self.run / "model_scratch")):
            result = evaluate(str(model), str(self.run / "eval"))
            result.pop("iou_table", None)
            segdet[name] = result
        self.metrics["segdet"] = segdet
        return {k: {"miou": v["miou"], "map": v["map"]} for k, v in segdet.items()}

    def stage_tttkd(self) -> dict:
        from tst_ros.tttkd.train import run_training

        t = replace(self.cfg.ttt_kd)
        if t.teacher in ("tstmm", "auto") and not getattr(t, "run", ""):
            t.run = str(self.run / "pretrain")
        return _jsonable(run_training(t, self.cfg.sim, str(self.run / "tttkd"), show_bar=not self.progress.jsonl,
                                      progress_stream=sys.stdout if self.progress.jsonl else None))

    def stage_tttkd_eval(self) -> dict:
        from tst_ros.cli import main as cli_main

        miou_by_k = {}
        s = self.cfg.specialize
        for label, style in (("test building", self.cfg.sim.style), ("shifted", "home_shifted")):
            out = self.run / f"tttkd_eval_{style}.json"
            rc = cli_main(["ttt-kd", "eval", "--model", str(self.run / "tttkd"), "--style", style, "--scenes",
                           str(s.tttkd_scenes), "--clouds", "1", "--ks", f"0,{self.cfg.ttt_kd.steps}", "--json",
                           "--out", str(out), "--config", str(self.run / "config.yaml")])
            if rc != 0:
                raise RuntimeError(f"ttt-kd eval on {style} failed (exit {rc})")
            result = json.loads(out.read_text())
            miou_by_k[label] = {k.split(".k")[1]: v for k, v in result.items() if k.startswith("miou.k")}
        self.metrics["tttkd"] = {"miou_by_k": miou_by_k}
        return miou_by_k

    # ----------------------------------------------------------------------------- hand-off
    def announce(self) -> None:
        # the deploy directory carries every task's weights, each signed by its manifest; the
        # ttt_kd node loads them from there
        from tst_ros.perception.export import add_to_manifest
        from tst_ros.util import atomic_write_bytes
        atomic_write_bytes(self.run / "deploy" / "tttkd.safetensors",
                           (self.run / "tttkd" / "tttkd.safetensors").read_bytes())
        manifest = add_to_manifest(self.run / "deploy", "tttkd.safetensors")
        segdet = self.metrics.get("segdet", {}).get("tst-mm", {})
        event = {"event": "model", "path": str(self.run / "deploy"), "tasks": ["segmentation", "detection", "ttt_kd"],
                 "modalities": manifest.get("inputs", manifest.get("modalities", [])),
                 "metrics": {"miou": segdet.get("miou", 0.0), "map": segdet.get("map", 0.0),
                             "map50": segdet.get("map50", 0.0)}}
        if self.progress.jsonl:
            self.progress.line(event)
        else:
            print(json.dumps(event), file=sys.stderr)


def _jsonable(obj) -> dict:
    return json.loads(json.dumps(obj, default=str)) if isinstance(obj, dict) else {}
