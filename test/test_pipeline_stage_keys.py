"""Pipeline stages are keyed by their inputs: a changed config value reruns its stage and the
stages downstream of it, nothing else, and pipeline.json says why; a changed pre-training
config starts a fresh pre-training run instead of resuming the old checkpoint. The main job's
transfer takes its inputs from the config (`transfer.inputs`), so it can serve colour alone; the oracle
(trained on the recorded stretch's labels) bounds the table unless `specialize.oracle` is off."""
import json

import pytest

from tst_ros import config
from tst_ros.config import RecordConfig, SimConfig
from tst_ros.data.from_sim import build_dataset
from tst_ros.graph.cli import MICRO
from tst_ros.graph.pipeline import STAGES, Pipeline
from tst_ros.perception.runtime import Predictor
from tst_ros.train.checkpoint import CHECKPOINT_FILE, read_checkpoint

# real stages with the smallest budgets that still exercise them; tttkd stages are not selected
TINY = MICRO + ["specialize.oracle=true", "pretrain.steps=2", "pretrain.image_size=64", "transfer.steps=2",
                "transfer.labeled_images=4", "specialize.eval_images=2"]
UNTIL = "evaluate"
SKIPPED = "skipped (inputs unchanged)"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "store"
    build_dataset(SimConfig(width=128, height=96, realtime=False), RecordConfig(image_size=64), 24, path)
    return path


def run(run_dir, store, *overrides) -> dict:
    Pipeline(config.load(None, TINY + list(overrides)), run_dir, store).run_all(until=UNTIL)
    return json.loads((run_dir / "pipeline.json").read_text())["last_run"]["stages"]


def test_changed_inputs_rerun_their_stage_and_its_downstream_stages_only(tmp_path, store):
    run_dir = tmp_path / "run"
    first = run(run_dir, store)
    assert list(first) == STAGES[:STAGES.index(UNTIL) + 1]
    assert set(first.values()) == {"run (not run yet)"}
    assert (run_dir / "config.yaml").is_file(), "the pipeline saves its resolved config itself"
    checkpoint = run_dir / "pretrain" / CHECKPOINT_FILE
    trained_at = checkpoint.stat().st_mtime_ns

    second = run(run_dir, store, "transfer.steps=3")
    assert second == {"pretrain": SKIPPED, "labeled_set": SKIPPED, "eval_set": SKIPPED, "oracle_set": SKIPPED,
                      "transfer": "rerun (config transfer.steps changed)",
                      "transfer_scratch": "rerun (config transfer.steps changed)",
                      "transfer_oracle": "rerun (config transfer.steps changed)",
                      "export": "rerun (upstream transfer reran)",
                      "evaluate": "rerun (upstream transfer, transfer_scratch, transfer_oracle reran)"}
    assert checkpoint.stat().st_mtime_ns == trained_at
    done = json.loads((run_dir / "pipeline.json").read_text())["done"]
    assert done["transfer"]["inputs"]["config"]["transfer.steps"] == 3
    assert done["transfer"]["reason"] == "config transfer.steps changed"

    third = run(run_dir, store, "transfer.steps=3", "pretrain.steps=3")
    assert third["pretrain"] == "rerun (config pretrain.steps changed)"
    assert third["transfer"] == "rerun (upstream pretrain reran)"
    assert third["transfer_oracle"] == "rerun (upstream pretrain reran)"
    assert third["export"] == "rerun (upstream transfer reran)"
    assert [third[s] for s in ("labeled_set", "eval_set", "oracle_set", "transfer_scratch")] == [SKIPPED] * 4
    # the old checkpoint (step 2 of a 2-step run) is kept aside, not resumed
    assert read_checkpoint(run_dir / "pretrain.stale-1" / CHECKPOINT_FILE)[1]["step"] == 2
    assert read_checkpoint(checkpoint)[1]["step"] == 3
    log = [json.loads(line) for line in (run_dir / "pretrain" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]

    assert set(run(run_dir, store, "transfer.steps=3", "pretrain.steps=3").values()) == {SKIPPED}

    # a robot served colour alone: the model reads depth predicted by the pre-training's decoder, and the
    # scratch baseline, which has no decoder, gets colour alone
    fourth = run(run_dir, store, "transfer.steps=3", "pretrain.steps=3", "transfer.inputs=[rgb]",
                 "transfer.predict_inputs=[depth]")
    assert fourth["transfer"] == fourth["transfer_scratch"] == \
        "rerun (config transfer.inputs, transfer.predict_inputs changed)"
    trained = json.loads((run_dir / "model" / "model.json").read_text())
    scratch = json.loads((run_dir / "model_scratch" / "model.json").read_text())
    assert trained["input_modalities"] == scratch["input_modalities"] == ["rgb"]
    assert trained["predicted_inputs"]["predicted"] == ["depth"] and "predicted_inputs" not in scratch
    served = Predictor.load(str(run_dir / "deploy"), backend="onnx")
    assert served.backend == "onnxruntime" and served.input_modalities == ["rgb"] and not served.uses_depth
    segdet = json.loads((run_dir / "metrics.json").read_text())["segdet"]
    assert segdet["tst-mm"]["inputs"] == segdet["oracle"]["inputs"] == ["rgb"]
    assert segdet["oracle"]["predicted_inputs"] == ["depth"] and segdet["scratch"]["predicted_inputs"] == []
    assert segdet["scratch"]["gap_closed"] == 0.0

    # without the oracle its stages do nothing and no gap is reported
    fifth = run(run_dir, store, "transfer.steps=3", "pretrain.steps=3", "transfer.inputs=[rgb]",
                "transfer.predict_inputs=[depth]", "specialize.oracle=false")
    assert fifth["oracle_set"] == "rerun (config specialize.oracle changed)"
    assert fifth["transfer_oracle"] == "rerun (config specialize.oracle changed; upstream oracle_set reran)"
    assert fifth["transfer"] == SKIPPED
    segdet = json.loads((run_dir / "metrics.json").read_text())["segdet"]
    assert set(segdet) == {"tst-mm", "scratch"} and segdet["tst-mm"]["gap_closed"] is None


def test_an_unfinished_pretraining_with_the_same_inputs_resumes_its_checkpoint(tmp_path, store):
    run_dir = tmp_path / "run"
    Pipeline(config.load(None, TINY), run_dir, store).run_all(until="pretrain")
    state_path = run_dir / "pipeline.json"
    state = json.loads(state_path.read_text())
    del state["done"]["pretrain"]                   # what an interrupted pre-training leaves behind
    state_path.write_text(json.dumps(state))

    Pipeline(config.load(None, TINY), run_dir, store).run_all(until="pretrain")
    assert json.loads(state_path.read_text())["last_run"]["stages"] == {"pretrain": "rerun (did not finish last time)"}
    assert not (run_dir / "pretrain.stale-1").exists()
    log = [json.loads(line) for line in (run_dir / "pretrain" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2], "resumed at its last step, no step trained twice"


def test_a_run_directory_without_pretraining_artifacts_is_not_set_aside(tmp_path):
    from tst_ros.config import Config
    from tst_ros.graph.pipeline import Pipeline

    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "trainer.log").write_text("the trainer node's own log\n")
    Pipeline(Config(), run, tmp_path / "store")._set_aside("pretrain")
    assert (run / "pretrain" / "trainer.log").is_file() and not list(run.glob("pretrain.stale-*"))
    (run / "pretrain" / "encoder.safetensors").write_bytes(b"not from these inputs")
    Pipeline(Config(), run, tmp_path / "store")._set_aside("pretrain")
    assert (run / "pretrain.stale-1" / "encoder.safetensors").is_file()
