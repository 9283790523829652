"""Benchmark protocols: the modality ablation's rows, TTT-KD's choice of settings on source
scenes only, the compute-scaling fit, the mixed pre-training store, the constant-modality copy;
options reach only the benchmarks that take them."""
import math

import numpy as np
import pytest

from tst_ros import modalities
from tst_ros.bench.modalities import variants
from tst_ros.bench.ttt_kd import KS, select_on_source


def test_modality_ablation_has_sensors_each_teacher_all_and_all_minus_each():
    rows = variants()
    sensors = rows["sensors"]
    teachers = [m.name for m in modalities.teachers()]
    assert teachers and not set(sensors) & set(teachers)
    assert rows["all"] == sensors + teachers
    for t in teachers:
        assert rows[f"+{t}"] == sensors + [t]
        assert set(rows[f"all - {t}"]) == set(sensors + teachers) - {t}
    assert len(rows) == 2 + 2 * len(teachers)


def test_ttt_kd_settings_are_chosen_on_source_scenes_and_never_on_test_scenes():
    figures = {}
    gains = {(1e-4, "source_style"): 0.01, (5e-4, "source_style"): 0.03,     # 5e-4 best on source
             (1e-4, "home"): 0.09, (5e-4, "home"): -0.02,                     # but worse on test scenes
             (1e-4, "home_shifted"): 0.05, (5e-4, "home_shifted"): 0.01}
    for (lr, group), gain in gains.items():
        prefix = group if lr == 1e-4 else f"lr{lr:g}.{group}"
        for k in KS:
            figures[f"{prefix}.miou.k{k}"] = 0.2 + gain * k / max(KS)
    chosen = select_on_source(figures, [1e-4, 5e-4], 1e-4)
    assert (chosen["selected.lr"], chosen["selected.k"]) == (5e-4, max(KS))
    assert round(chosen["selected.home_gain"], 4) == -0.02
    assert round(chosen["selected.home_shifted_gain"], 4) == 0.01


def test_finetune_option_is_refused_by_benchmarks_without_it():
    from tst_ros.cli import main as cli_main

    with pytest.raises(SystemExit, match="bench sim has no --finetune"):
        cli_main(["bench", "sim", "--quick", "--finetune", "full"])


def test_scaling_fit_finds_where_a_log_linear_trend_crosses_and_none_when_it_does_not_rise():
    from tst_ros.bench.scaling import reached_at

    minutes = [2.0, 5.0, 15.0, 40.0]
    rising = [20 + 2 * math.log(m) for m in minutes]             # crosses 30 at exp(5) min
    assert reached_at(minutes, rising, 30.0) == pytest.approx(math.exp(5), abs=0.1)
    assert reached_at(minutes, rising, 23.0) == 5.0               # a measured point already reaches it
    assert reached_at(minutes, [22.0, 21.0, 20.0, 19.0], 30.0) is None
    assert reached_at(minutes, rising, 60.0) is None              # only beyond 100x the longest run


def test_scaling_margin_pairs_tst_mm_fed_rgb_with_tst_mae_point_by_point():
    from tst_ros.bench.scaling import RGB_MARGIN_TARGET, RGB_ROW, rgb_margin

    curves = {RGB_ROW: [{"minutes": 2.0, "seg_miou": 31.0}, {"minutes": 40.0, "seg_miou": 34.5}],
              "tst-mae": [{"minutes": 2.2, "seg_miou": 30.5}, {"minutes": 39.0, "seg_miou": 32.0}]}
    margin = rgb_margin(curves)
    assert margin["minutes"] == [2.1, 39.5]
    assert margin["seg_miou_margin"] == [0.5, 2.5]
    assert margin["target"] == RGB_MARGIN_TARGET
    assert margin["reached_at_min"] == 39.5


def test_adapters_benchmark_refuses_unknown_rows_and_summarises_a_subset_without_targets():
    from tst_ros.bench import adapters

    with pytest.raises(SystemExit, match="no rows"):
        adapters.run(quick=True, rows=["stage 2 only", "no such row"])
    per_seed = [{name: {"seg_miou": 20.0 + s, "things_miou": 10.0, "stuff_miou": 60.0, "modality_worth": 1.0,
                        "trainable_fraction": 0.09}
                 for name in ("stage 2 only", adapters.FULL_FINETUNING)} for s in (0, 1)]
    rows = adapters.summarise(per_seed, [0, 1])
    assert list(rows) == ["stage 2 only", adapters.FULL_FINETUNING]
    assert rows["stage 2 only"]["seg_miou"] == {"mean": 20.5, "std": 0.5, "seeds": {"0": 20.0, "1": 21.0}}
    assert adapters.targets(rows) == {}
    assert "| stage 2 only | 20.5 ± 0.5 (+1.0) |" in adapters.table_markdown({"depth": rows})


def test_a_constant_modality_copy_keeps_the_set_and_holds_one_value_where_the_modality_was_valid(tmp_path):
    import cv2

    from tst_ros.bench.adapters import constant_copy
    from tst_ros.sim import labeled_set

    labeled_set.write(tmp_path / "set", 3, seed=1000, width=64, height=48, progress=False, thermal=True)
    for modality in ("depth", "thermal"):
        invalid = modalities.get(modality).invalid_value
        out = constant_copy(tmp_path / "set", modality, tmp_path / f"{modality}_constant")
        before = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in sorted((tmp_path / "set" / modality).glob("*.png"))]
        after = [cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in sorted((out / modality).glob("*.png"))]
        assert len(after) == len(before) == 3 and sorted(p.name for p in out.iterdir()) == sorted(
            p.name for p in (tmp_path / "set").iterdir())
        assert all(a.dtype == b.dtype == np.uint16 for a, b in zip(after, before))
        values = np.unique(np.concatenate([a[b != invalid] for a, b in zip(after, before)]))
        assert len(values) == 1 and values[0] != invalid
        assert all(((a == invalid) == (b == invalid)).all() for a, b in zip(after, before))
    with pytest.raises(ValueError, match="no thermal"):
        labeled_set.write(tmp_path / "plain", 1, seed=1000, width=64, height=48, progress=False)
        constant_copy(tmp_path / "plain", "thermal", tmp_path / "none")


def test_specialization_budgets_transfer_at_the_main_jobs_rate_and_mode():
    from tst_ros.bench import specialization
    from tst_ros.config import TransferConfig

    for budget in specialization.BUDGETS.values():
        assert budget["transfer_lr"] == TransferConfig().lr
        assert budget["finetune"] == TransferConfig().finetune


def test_specialization_image_size_must_fit_the_patch_and_backbone_stride_and_is_refused_elsewhere():
    from tst_ros.bench import specialization
    from tst_ros.cli import main as cli_main

    assert specialization.BUDGETS["full"]["image_size"] == specialization.LOOP_IMAGE_SIZE
    for bad in (150, 144, 0, -32):
        with pytest.raises(ValueError, match="multiple of 32"):
            specialization.run(quick=True, rows=["scratch"], image_size=bad)
    assert specialization.check_image_size(160) == 160
    with pytest.raises(SystemExit, match="bench adapters has no --image_size"):
        cli_main(["bench", "adapters", "--quick", "--image-size", "160"])


def test_mixed_pretraining_store_holds_the_test_frames_then_as_many_from_the_transfer_buildings(tmp_path):
    import numpy as np

    from tst_ros.bench import specialization
    from tst_ros.data.store import Store

    budget = {"record_frames": 8, "labeled_images": 4, "eval_images": 2, "image_size": 32}
    paths = specialization.build_data(tmp_path, budget, building="home:3", mixed_store=True)
    test, mixed = Store(paths["store"], "r"), Store(paths["mixed_store"], "r")
    assert len(test) == 8 and len(mixed) == 16
    for seq in range(8):     # the same test-building frames come first ...
        np.testing.assert_array_equal(mixed.read(seq, names=["rgb"])["rgb"], test.read(seq, names=["rgb"])["rgb"])
    differing = [not np.array_equal(mixed.read(8 + k, names=["rgb"])["rgb"], test.read(k, names=["rgb"])["rgb"])
                 for k in range(8)]
    assert all(differing)    # ... then frames of other buildings
    assert "source_store" not in paths


def _seed_rows(values: dict[str, float], per_class: dict[str, float]) -> dict:
    return {name: {**{m: v + i for i, m in enumerate(("seg_miou", "things_miou", "stuff_miou", "det_map",
                                                       "det_map50"))}, "per_class_iou": per_class}
            for name, v in values.items()}


def test_runs_of_some_seeds_and_rows_merge_into_the_statistics_of_one_run_over_all():
    from tst_ros.bench.seed_runs import merge_runs, summarise, table_markdown

    per_seed = [_seed_rows({"scratch": 10.0, "oracle": 30.0, "tst-mm": 20.0}, {"wall": 50.0, "chair": 10.0}),
                _seed_rows({"scratch": 12.0, "oracle": 34.0, "tst-mm": 25.0}, {"wall": 60.0, "chair": 20.0}),
                _seed_rows({"scratch": 11.0, "oracle": 32.0, "tst-mm": 21.0}, {"wall": 70.0, "chair": 30.0})]
    protocol = {"test_building": "home:0", "budget": {"preset": "s", "device": "cuda"}, "eval_frames": {"count": 200}}

    def result(seeds, rows, names=("scratch", "oracle", "tst-mm")):
        summary = summarise([{n: r[n] for n in names} for r in rows], seeds)
        return {**protocol, "benchmark": "specialization", "host": "gpu", "seeds": seeds, "methods": summary,
                "inputs": {n: "rgb" for n in names}, "encoder": {"image_size": 128, "presets": {n: "s" for n in names}},
                "total_seconds": 100.0}
    whole = summarise(per_seed, [0, 1, 2])
    merged = merge_runs([result([2], per_seed[2:]), result([0, 1], per_seed[:2], ["scratch"]),
                         result([0, 1], per_seed[:2], ["oracle", "tst-mm"])])
    assert merged["seeds"] == [0, 1, 2] and merged["merged_runs"] == 3 and "host" not in merged
    assert merged["encoder"]["presets"] == {"scratch": "s", "oracle": "s", "tst-mm": "s"}
    for name, row in whole.items():
        for metric in ("seg_miou", "things_miou", "det_map50"):
            assert merged["methods"][name][metric] == row[metric]
        assert merged["methods"][name]["per_class_iou"] == pytest.approx(row["per_class_iou"], abs=0.05)
        assert merged["gap_closed"][name] == row["gap_closed"]
    assert merged["table_markdown"] == table_markdown(whole)
    assert merged["total_seconds"] == 300.0
    with pytest.raises(ValueError, match="more than one run"):
        merge_runs([result([0, 1], per_seed[:2]), result([1], per_seed[1:2])])
    with pytest.raises(ValueError, match="rows missing"):
        merge_runs([result([0, 1], per_seed[:2]), result([2], per_seed[2:], ["scratch"])])
    other = {**result([2], per_seed[2:]), "budget": {"preset": "tiny", "device": "cpu"}}
    with pytest.raises(ValueError, match=r"differ in \['budget'\]"):
        merge_runs([result([0, 1], per_seed[:2]), other])
    with pytest.raises(ValueError, match="only results of"):
        merge_runs([result([0, 1], per_seed[:2]), {"benchmark": "sim", "frames_per_s": 30}])
    rgbd = {**result([2], per_seed[2:]), "inputs": {"scratch": "rgb,depth"}}
    with pytest.raises(ValueError, match="another inputs"):
        merge_runs([result([0, 1], per_seed[:2]), rgbd])


def test_specialization_options_refuse_bad_seeds_presets_devices_and_merge_files_clearly():
    from tst_ros.bench import specialization
    from tst_ros.cli import main as cli_main

    with pytest.raises(SystemExit, match="comma-separated integers"):
        cli_main(["bench", "specialization", "--quick", "--seeds", "0,one"])
    with pytest.raises(ValueError, match="not to --merge or --scaling"):
        specialization.run(merge=["a.json"], device="cuda")
    with pytest.raises(ValueError, match="cannot merge .*missing.json"):
        specialization.run(merge=["missing.json"])
    with pytest.raises(SystemExit, match="bench sim has no --seeds"):
        cli_main(["bench", "sim", "--quick", "--seeds", "0"])

    assert specialization.check_preset("s") == "s"
    for bad in ("tiny-imagenet", "xl"):
        with pytest.raises(ValueError, match="plain ViT preset"):
            specialization.run(quick=True, rows=["scratch"], preset=bad)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            specialization.run(quick=True, rows=["scratch"], device="cuda")


def test_benchmark_data_is_built_once_read_again_where_it_moved_and_refused_when_it_differs(tmp_path):
    from tst_ros.bench import data, specialization

    budget = {**specialization.BUDGETS["quick"], "record_frames": 6, "labeled_images": 4, "eval_images": 2}
    built = data.bench_data(tmp_path / "built", budget)
    stamp = (built["store"] / "index.jsonl").stat().st_mtime_ns
    (tmp_path / "built").rename(tmp_path / "moved")
    again = data.bench_data(tmp_path / "moved", budget)
    assert again == {k: tmp_path / "moved" / p.relative_to(tmp_path / "built") for k, p in built.items()}
    assert (again["store"] / "index.jsonl").stat().st_mtime_ns == stamp        # read again, not rebuilt
    with pytest.raises(ValueError, match=r"differs in \['eval_images'\]"):
        data.bench_data(tmp_path / "moved", {**budget, "eval_images": 3})
    (tmp_path / "partial" / "store").mkdir(parents=True)
    with pytest.raises(ValueError, match="interrupted build"):
        data.bench_data(tmp_path / "partial", budget)


def test_runs_started_side_by_side_build_the_benchmark_data_once(tmp_path, monkeypatch):
    import threading

    from tst_ros.bench import data, specialization

    budget = {**specialization.BUDGETS["quick"], "record_frames": 4, "labeled_images": 2, "eval_images": 2}
    builds, build = [], data.build_data

    def counted(*args, **kwargs):
        builds.append(1)
        return build(*args, **kwargs)
    monkeypatch.setattr(data, "build_data", counted)
    results = []
    runs = [threading.Thread(target=lambda: results.append(data.bench_data(tmp_path / "d", budget))) for _ in range(3)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=600)
    assert len(builds) == 1 and len(results) == 3 and results[0] == results[1] == results[2]


def test_every_benchmark_row_can_be_named_in_the_comma_separated_rows_option():
    from tst_ros.bench import adapters, specialization

    names = [r[0] for r in specialization.ROWS] + list(adapters.ROWS) + list(variants())
    assert names and not [n for n in names if "," in n or n != n.strip()]
