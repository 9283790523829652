"""The offline half of the loop, run by the trainer node as a child process.

pretrain (TST-MM on the recorded store) -> external labeled set (other simulated buildings,
unless the user gives one) -> held-out evaluation set of the test building -> transfer of the
segmentation/detection heads onto the TST-MM encoder and onto a scratch encoder (same budget)
-> ONNX export with parity check -> evaluation of both -> TTT-KD joint training on source
buildings and before/after evaluation -> a `{"event": "model"}` progress line.

Each stage is keyed by its inputs (STAGE_INPUTS): the config values it reads, the keys of the
upstream stages whose artifacts it consumes and, for data from outside the run, a checksum
(the dataset store's committed index, whose lines carry each sample's CRC-32). A run skips a
stage whose key matches the one recorded in `pipeline.json` and reruns the others, so a
changed input reruns its stage and everything downstream of it; each decision and its reason
("transfer: rerun (config transfer.steps changed)") is printed and recorded under
`last_run`. Pre-training resumes from its checkpoint only when the checkpoint was started
with the same key; otherwise the old run directory is moved aside (`pretrain.stale-N`).
The resolved config is saved as RUN/config.yaml before any stage runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from tst_ros import config as config_mod
from tst_ros.config import Config
from tst_ros.util import atomic_write_json, emit_progress

log = logging.getLogger("tst_ros.pipeline")

STAGES = ["pretrain", "labeled_set", "eval_set", "oracle_set", "transfer", "transfer_scratch", "transfer_oracle",
          "export", "evaluate", "tttkd", "tttkd_eval"]

# stage -> (config sections or section.fields it reads, upstream stages whose artifacts it uses)
STAGE_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pretrain": (("pretrain",), ()),                                    # + the dataset store
    "labeled_set": (("transfer.labeled_set", "transfer.labeled_images", "sim.width", "sim.height"), ()),
    "eval_set": (("sim.seed", "sim.style", "sim.width", "sim.height", "specialize.eval_images",
                  "specialize.record_frames"), ()),
    "transfer": (("transfer", "pretrain.preset", "pretrain.patch", "record.image_size"), ("pretrain", "labeled_set")),
    "oracle_set": (("specialize.oracle", "sim.seed", "sim.style", "sim.width", "sim.height",
                    "specialize.record_frames", "transfer.labeled_images"), ()),
    "transfer_scratch": (("transfer", "pretrain.preset", "pretrain.patch", "record.image_size"), ("labeled_set",)),
    "transfer_oracle": (("specialize.oracle", "transfer", "pretrain.preset", "pretrain.patch", "record.image_size"),
                        ("pretrain", "oracle_set")),
    "export": ((), ("transfer",)),
    "evaluate": ((), ("transfer", "transfer_scratch", "transfer_oracle", "eval_set")),
    "tttkd": (("ttt_kd", "sim"), ("pretrain", "export")),              # the tstmm or seg teacher
    "tttkd_eval": (("ttt_kd", "sim", "specialize.tttkd_scenes"), ("tttkd",)),
}


def reads_building(transfer_cfg) -> bool:
    """Whether transfer reads the building's recorded frames (self-training, building style,
    masked modeling, batch-norm statistics)."""
    return (transfer_cfg.self_training > 0 or transfer_cfg.building_style > 0 or transfer_cfg.building_mm > 0
            or transfer_cfg.building_norm_stats)


# fields that change how a stage runs but not what it produces
NOT_INPUTS = {"pretrain.workers", "pretrain.device", "pretrain.compile", "pretrain.tensorboard",
              "pretrain.checkpoint_every", "ttt_kd.device", "ttt_kd.mode", "ttt_kd.stride", "ttt_kd.sync_window_s"}
# stages that resume partial work from their directory
RESUMABLE = {"pretrain": "pretrain"}


class Progress:
    """Progress protocol lines on stdout (the trainer node parses them) or plain lines on stderr."""

    def __init__(self, jsonl: bool):
        self.jsonl = jsonl

    def stage(self, stage: str, step: int = 0, total: int = 1, message: str = "") -> None:
        if self.jsonl:
            self.line({"stage": stage, "step": step, "total": total, "loss": 0.0, "samples_per_s": 0.0,
                       "eta_s": 0.0, "message": message})
        else:
            log.info(f"{stage}: {message}")

    def line(self, obj: dict) -> None:
        emit_progress(sys.stdout, **obj)


class Pipeline:
    def __init__(self, cfg: Config, run_dir: str | Path, data: str | Path, progress_jsonl: bool = False):
        self.cfg = cfg
        self.run = Path(run_dir)
        self.data = str(data)
        self.progress = Progress(progress_jsonl)
        self.state_path = self.run / "pipeline.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.state.setdefault("done", {})
        self.state.setdefault("started", {})
        self.metrics_path = self.run / "metrics.json"
        self.metrics = json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}

    # paths of the stages' artifacts
    @property
    def labeled(self) -> Path:
        return Path(self.cfg.transfer.labeled_set) if self.cfg.transfer.labeled_set else self.run / "labeled"

    def _done(self, stage: str, key: str, inputs: dict, reason: str, info: dict | None = None) -> None:
        self.state["done"][stage] = {"time": time.time(), **(info or {}), "key": key, "inputs": inputs,
                                     "reason": reason}
        atomic_write_json(self.state_path, self.state)
        atomic_write_json(self.metrics_path, self.metrics)

    def _start(self, stage: str, key: str, inputs: dict, decision: str) -> None:
        """Forget the stage's old record before its artifacts are overwritten, so an interrupted
        rerun is never mistaken for a finished one."""
        self.state["done"].pop(stage, None)
        self.state["started"][stage] = {"key": key, "inputs": inputs}
        self.state["last_run"]["stages"][stage] = decision
        atomic_write_json(self.state_path, self.state)

    def run_all(self, until: str = STAGES[-1]) -> dict:
        """Every stage up to and including `until` (STAGES lists upstream stages first); the
        model hand-off follows the last stage only."""
        t0 = time.perf_counter()
        config_mod.save_resolved(self.cfg, self.run)
        self.state["last_run"] = {"time": time.time(), "stages": {}}
        keys: dict[str, str] = {}
        ran: set[str] = set()
        for stage in STAGES[:STAGES.index(until) + 1]:
            inputs = self.stage_inputs(stage, keys)
            keys[stage] = key = stage_key(inputs)
            done = self.state["done"].get(stage)
            upstream_ran = [u for u in STAGE_INPUTS[stage][1] if u in ran]
            if done is not None and done.get("key") == key and not upstream_ran:
                self.state["last_run"]["stages"][stage] = "skipped (inputs unchanged)"
                self.progress.stage(stage, 1, 1, "skipped (inputs unchanged)")
                continue
            started = self.state["started"].get(stage)
            unfinished = done is None and started is not None
            reason = change_reason(done or started, inputs, upstream_ran, unfinished)
            decision = f"{'rerun' if done or started else 'run'} ({reason})"
            self.progress.stage(stage, 0, 1, decision)
            if stage in RESUMABLE and (started or {}).get("key") != key:
                self._set_aside(RESUMABLE[stage])
            self._start(stage, key, inputs, decision)
            # stages speak the progress protocol on stdout; the trainer ignores any other line
            info = getattr(self, f"stage_{stage}")()
            self._done(stage, key, inputs, reason, info)
            ran.add(stage)
        atomic_write_json(self.state_path, self.state)
        self.metrics["budget"] = self.budget(time.perf_counter() - t0)
        atomic_write_json(self.metrics_path, self.metrics)
        if until == STAGES[-1]:
            self.announce()
        return self.metrics

    def stage_inputs(self, stage: str, keys: dict[str, str]) -> dict:
        """What `stage` reads now (JSON-normalised, as recorded in pipeline.json)."""
        fields, upstream = STAGE_INPUTS[stage]
        inputs = {"config": config_values(self.cfg, fields), "upstream": {u: keys[u] for u in upstream},
                  "data": {}}
        if stage == "pretrain" or (stage.startswith("transfer") and reads_building(self.cfg.transfer)):
            inputs["data"]["dataset"] = data_checksum(self.data)     # transfer reads the building's frames
        if stage == "labeled_set" and self.cfg.transfer.labeled_set:
            inputs["data"]["labeled set"] = data_checksum(self.labeled)
        return json.loads(json.dumps(inputs, default=str))

    def _set_aside(self, name: str) -> None:
        """Move a run directory whose checkpoint was made from other inputs out of the way (a
        directory holding no pre-training artifacts, e.g. only the trainer node's log, stays)."""
        from tst_ros.models import ENCODER_FILE
        from tst_ros.train.checkpoint import CHECKPOINT_FILE

        path = self.run / name
        if not any((path / f).exists() for f in (CHECKPOINT_FILE, ENCODER_FILE)):
            return
        n = 1
        while (self.run / f"{name}.stale-{n}").exists():
            n += 1
        path.rename(self.run / f"{name}.stale-{n}")
        self.progress.stage(name, 0, 1, f"its checkpoint was not made from these inputs: moved {name}/ to "
                                        f"{name}.stale-{n}/, starting fresh")

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

    def stage_oracle_set(self) -> dict:
        """Labeled frames of the test building's recorded stretch (for the oracle only: an upper
        bound for the report, never used by the served model)."""
        from tst_ros.sim import labeled_set

        if not self.cfg.specialize.oracle:
            return {"skipped": "specialize.oracle is off"}
        s, record = self.cfg.sim, self.cfg.specialize.record_frames
        return labeled_set.write(self.run / "oracle", min(self.cfg.transfer.labeled_images, record), styles=[s.style],
                                 seed=s.seed, span_frames=record, width=s.width, height=s.height,
                                 progress=not self.progress.jsonl)

    def _transfer(self, encoder: str, out: str, cfg=None, labeled: Path | None = None) -> dict:
        from tst_ros.perception.transfer import transfer

        p = self.cfg.pretrain
        return transfer(encoder, str(labeled or self.labeled), str(self.run / out), cfg=cfg or self.cfg.transfer,
                        preset=p.preset, image_size=self.cfg.record.image_size, patch=p.patch,
                        progress_stream=sys.stdout if self.progress.jsonl else None,
                        show_bar=not self.progress.jsonl, building_store=self.data)

    def stage_transfer(self) -> dict:
        return _jsonable(self._transfer(str(self.run / "pretrain"), "model"))

    def stage_transfer_scratch(self) -> dict:
        # a random encoder has no decoders to predict missing inputs from: the baseline gets the given ones
        return _jsonable(self._transfer("scratch", "model_scratch", replace(self.cfg.transfer, predict_inputs=[])))

    def stage_transfer_oracle(self) -> dict:
        if not self.cfg.specialize.oracle:
            return {"skipped": "specialize.oracle is off"}
        return _jsonable(self._transfer(str(self.run / "pretrain"), "model_oracle", labeled=self.run / "oracle"))

    def stage_export(self) -> dict:
        from tst_ros.perception.export import export_model

        return _jsonable(export_model(self.run / "model", self.run / "deploy"))

    def stage_evaluate(self) -> dict:
        from tst_ros.perception.metrics import gap_closed
        from tst_ros.perception.transfer import evaluate

        models = {"tst-mm": "model", "scratch": "model_scratch", **({"oracle": "model_oracle"}
                                                                    if self.cfg.specialize.oracle else {})}
        segdet = {}
        for name, model in models.items():
            result = evaluate(str(self.run / model), str(self.run / "eval"))
            result.pop("iou_table", None)
            segdet[name] = result
        oracle = segdet.get("oracle", {}).get("miou")
        for result in segdet.values():
            result["gap_closed"] = gap_closed(result["miou"], segdet["scratch"]["miou"], oracle)
        self.metrics["segdet"] = segdet
        return {k: {"miou": v["miou"], "map": v["map"], "gap_closed": v["gap_closed"]} for k, v in segdet.items()}

    def stage_tttkd(self) -> dict:
        from tst_ros.perception.export import output_paths
        from tst_ros.tttkd.train import run_training

        t = replace(self.cfg.ttt_kd)
        if t.teacher == "auto":           # the building's own segmentation, as served
            t.teacher = f"seg:{output_paths(self.run / 'deploy')[0]}"
        if t.teacher == "tstmm" and not t.run:
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
            log.info(f"model ready: {json.dumps(event)}")


def _jsonable(obj) -> dict:
    return json.loads(json.dumps(obj, default=str)) if isinstance(obj, dict) else {}


def config_values(cfg: Config, names: tuple[str, ...]) -> dict:
    """{"section.field": value} for whole sections ("transfer") and single fields ("sim.width")."""
    flat = {f"{section}.{k}": v for section, fields in config_mod.to_dict(cfg).items() for k, v in fields.items()}
    out = {}
    for name in names:
        matched = {k: v for k, v in flat.items() if k == name or k.startswith(name + ".")}
        if not matched:
            raise KeyError(f"stage input {name!r} is not a config section or field")
        out.update({k: v for k, v in matched.items() if k not in NOT_INPUTS})
    return out


def data_checksum(path: str | Path) -> str:
    """A dataset store: sha256 of its committed index (one line per sample, with its CRC-32).
    Another directory: of its files' names, sizes and modification times. Else the spec itself."""
    path = Path(path)
    digest = hashlib.sha256()
    if (path / "index.jsonl").is_file():
        from tst_ros.data.store import read_index

        _, committed = read_index(path / "index.jsonl")
        with open(path / "index.jsonl", "rb") as f:
            digest.update(f.read(committed))
    elif path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            st = f.stat()
            digest.update(f"{f.relative_to(path)} {st.st_size} {st.st_mtime_ns}\n".encode())
    else:
        digest.update(str(path).encode())
    return digest.hexdigest()[:16]


def stage_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def change_reason(previous: dict | None, inputs: dict, upstream_ran: list[str], unfinished: bool = False) -> str:
    """Why a stage runs: what differs between its previous inputs and `inputs`, or which of its
    upstream stages ran in this call."""
    if previous is None:
        return "not run yet"
    old = previous.get("inputs")
    if old is None:
        return "no input record from an earlier run"
    reasons = []
    before, now = old["config"], inputs["config"]
    changed = sorted(k for k in {**before, **now} if before.get(k) != now.get(k))
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        reasons.append(f"config {', '.join(changed[:3])}{more} changed")
    reran = [u for u in inputs["upstream"] if u in upstream_ran or old["upstream"].get(u) != inputs["upstream"][u]]
    if reran:
        reasons.append(f"upstream {', '.join(reran)} reran")
    reasons += [f"{name} changed" for name in inputs["data"] if old["data"].get(name) != inputs["data"][name]]
    if reasons:
        return "; ".join(reasons)
    return "did not finish last time" if unfinished else "inputs changed"
