"""What each node of the package reports on /diagnostics (`tst_ros.ros.diagnostics` publishes it).

One function per node type builds its `NodeDiagnostics` from the counters the node keeps
anyway: input and output rates, latency where the node measures it, drops by reason
(`drops.<reason>`), and per node the model version (perception, ttt_kd; perception serving an
adapter bank adds `bank_entry` and `bank_swap_ms`), the store's samples
(recorder) or the training stage (trainer). Managed (lifecycle) nodes add `lifecycle_state`.
"""
from __future__ import annotations

from tst_ros import modalities as registry
from tst_ros.ros.diagnostics import ERROR, OK, WARN, NodeDiagnostics

# frames_without_<image>: no paired camera image (depth, thermal) within the sync slop
PERCEPTION_DROPS = ("frames_replaced", "frames_inactive", "frames_without_model",
                    *(f"frames_without_{m.name}" for m in registry.one_channel_cameras()),
                    "depth_info_pending", "depth_not_registered", "bad_inputs", "processing_errors",
                    "model_load_failures")
TTTKD_DROPS = ("skipped_stale", "skipped_no_model", "failed")


def lifecycle_state(node) -> str | None:
    """"active" / "inactive" / "unconfigured" for a managed node, None for a plain one."""
    if not getattr(node, "MANAGED", False):
        return None
    if getattr(node, "accepting", False):
        return "active"
    return "inactive" if getattr(node, "configured", False) else "unconfigured"


def _with_state(node, values: dict) -> tuple[str | None, dict]:
    state = lifecycle_state(node)
    if state is not None:
        values["lifecycle_state"] = state
    return state, values


def perception_diagnostics(node) -> NodeDiagnostics:
    """Segmentation and detection (`_model_node.ModelServingNode.counters`)."""
    c = node.counters

    def status():
        state, values = _with_state(node, {
            "model_version": node.model_version, "frames_received": c["frames_received"],
            "frames_processed": c["frames_processed"], **{f"drops.{k}": c[k] for k in PERCEPTION_DROPS}})
        recent = sorted(node.process_times)
        if recent:          # worker time per frame: conversion, inference, publishing
            values["latency_ms_p50"] = round(1000.0 * recent[len(recent) // 2], 2)
            values["latency_ms_max"] = round(1000.0 * recent[-1], 2)
        if node.last_error:
            values["last_error"] = node.last_error
        serving = f"model v{node.model_version}"
        if getattr(node, "bank", None) is not None:          # an adapter bank (tst_ros.ros.bank_switch)
            values["bank_entry"] = node.bank.active or ""
            values["bank_swap_ms"] = round(node.bank.last_swap_ms or 0.0, 2)
            serving = f"bank entry {node.bank.active} (v{node.model_version})"
        if state not in (None, "active"):
            return OK, state, values
        if node.predictor is None:
            return WARN, "no model loaded (set model_path or publish /tst/model)", values
        if node.last_error:
            return WARN, f"serving {serving}; a model update was rejected", values
        if c["depth_not_registered"]:
            return WARN, "depth frames refused: not registered to colour (set depth_extrinsic)", values
        return OK, f"serving {serving}", values

    return NodeDiagnostics(node, status, {"input_rate_hz": lambda: c["frames_received"],
                                          "output_rate_hz": lambda: c["frames_processed"]})


def recorder_diagnostics(node) -> NodeDiagnostics:
    """Recorder: messages in, samples committed, `counts()` (pipeline drops by reason)."""
    def status():
        configured = node.pipeline is not None
        counts = node.counts()
        state, values = _with_state(node, {
            "store_samples": node.samples_written, "dataset": str(node.cfg.dataset),
            "messages_received": node._received, "max_queue": node._max_queue,
            **{f"drops.{k}": v for k, v in counts.items()}})
        if not configured or state not in (None, "active"):
            return OK, state or "not recording", values
        if node.pipeline.full:
            return WARN, f"store full ({node.samples_written} samples); not recording", values
        if node._worker is not None and not node._worker.is_alive() and not node._stop.is_set():
            return ERROR, "recorder worker stopped", values
        return OK, f"recording: {node.samples_written} samples", values

    return NodeDiagnostics(node, status, {"input_rate_hz": lambda: node._received,
                                          "output_rate_hz": lambda: node.samples_written})


def trainer_diagnostics(node) -> NodeDiagnostics:
    """Trainer: the training stage, progress and the last published model version."""
    def status():
        p = node.final_progress
        values = {"training_stage": node.stage, "samples_seen": node.samples, "min_samples": node.min_samples,
                  "model_version": node.version, "step": int(p.get("step", 0)), "total_steps": int(p.get("total", 0)),
                  "loss": float(p.get("loss", 0.0)), "samples_per_s": float(p.get("samples_per_s", 0.0)),
                  "running": node.running()}
        level = ERROR if node.stage == "error" else OK
        return level, f"{node.stage}: {node.message}"[:300], values

    return NodeDiagnostics(node, status, {"step_rate_hz": lambda: int(node.final_progress.get("step", 0))})


def sim_diagnostics(node) -> NodeDiagnostics:
    """Simulator: frames published, frames skipped because rendering fell behind real time."""
    def status():
        values = {"frames_published": node.published, "drops.skipped_late": node.skipped,
                  "render_ms_mean": 1000.0 * node.render_s / max(1, node.published)}
        message = "done" if node.done else "paused" if node.paused else "publishing"
        return OK, message, values

    return NodeDiagnostics(node, status, {"output_rate_hz": lambda: node.published})


def tttkd_diagnostics(node) -> NodeDiagnostics:
    """TTT-KD: the cloud accounting of `stats()`, labelling latency, the served model."""
    def status():
        stats = node.stats()
        recent = node.process_times[-20:]
        values = {"clouds_received": stats["received"], "clouds_labelled": stats["labelled"],
                  "pending": stats["pending"], **{f"drops.{k}": stats[k] for k in TTTKD_DROPS},
                  "model_version": getattr(node, "model_version", 0), "rejected_updates": node.rejected_updates}
        if recent:
            values["latency_ms_mean"] = 1000.0 * sum(recent) / len(recent)
        if node.labeler is None:
            return WARN, "no TTT-KD model yet (parameter `model` or /tst/model)", values
        if node.rejected_updates:
            return WARN, "labelling; a model update was rejected", values
        return OK, "labelling", values

    return NodeDiagnostics(node, status, {"input_rate_hz": lambda: node.counts["received"],
                                          "output_rate_hz": lambda: node.counts["labelled"]})


def replay_diagnostics(node) -> NodeDiagnostics:
    """Replay: messages published; a damaged bag is an error."""
    def status():
        values = {"messages_published": node.published, "bag": str(node.bag),
                  "unacknowledged_topics": ",".join(node.unacknowledged)}
        if node.error:
            return ERROR, f"replay stopped: {node.error}"[:300], values
        if node.unacknowledged:
            return WARN, "finished; some reliable subscribers did not acknowledge everything", values
        return OK, "finished" if node.done.is_set() else "replaying", values

    return NodeDiagnostics(node, status, {"output_rate_hz": lambda: node.published})
