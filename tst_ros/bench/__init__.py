"""Benchmarks: `tst-ros bench NAME --json [--quick]`.

Each benchmark is a module `tst_ros.bench.<name>` with `run(quick: bool) -> dict` returning
flat, self-explaining figures (e.g. {"image.ratio": 1.4}); ratios are measured side by
side in the same run. `--quick` runs a shortened version of the same measurement (< 1 min).
"""
BENCHMARKS = {
    "convert": "tst_ros.bench.convert",
    "sim": "tst_ros.bench.sim",
    "record": "tst_ros.bench.record",
    "pretrain": "tst_ros.bench.pretrain",
    "transfer": "tst_ros.bench.transfer",
    "specialization": "tst_ros.bench.specialization",
    "modalities": "tst_ros.bench.modalities",
    "adapters": "tst_ros.bench.adapters",
    "bank": "tst_ros.bench.bank",
    "perception": "tst_ros.bench.perception",
    "ttt-kd": "tst_ros.bench.ttt_kd",
}
