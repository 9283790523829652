"""Benchmark protocols: the modality ablation's rows and TTT-KD's choice of settings on
source scenes only; options reach only the benchmarks that take them."""
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
    import pytest

    from tst_ros.cli import main as cli_main

    with pytest.raises(SystemExit, match="bench sim has no --finetune"):
        cli_main(["bench", "sim", "--quick", "--finetune", "full"])
