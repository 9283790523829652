"""Building recognition against bank fingerprints: scores are the best cosine similarity to an
entry's prototypes, averaged over a window; the active entry changes only after
`switch_after` consistent decisions, never on a single outlier; prototypes are unit k-means
centres."""
import json

import numpy as np
import pytest

from tst_ros.perception.fingerprint import prototypes
from tst_ros.perception.recognition import BuildingRecognizer

D = 16


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def fingerprints():
    rng = np.random.default_rng(0)
    return {name: np.stack([unit(rng.normal(size=D)) for _ in range(3)]) for name in ("a", "b", "c")}


def frames_of(fingerprints, name: str, n: int, noise: float = 0.05, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    protos = fingerprints[name]
    return [unit(protos[i % len(protos)] + noise * rng.normal(size=D)) for i in range(n)]


def test_switches_only_after_switch_after_consistent_decisions(fingerprints):
    rec = BuildingRecognizer(fingerprints, active="a", window=1, switch_after=3)
    decisions = [rec.update(i, e) for i, e in enumerate(frames_of(fingerprints, "b", 5))]
    assert [d.best for d in decisions] == ["b"] * 5
    assert [d.switched for d in decisions] == [False, False, True, False, False]
    assert [d.active for d in decisions] == ["a", "a", "b", "b", "b"]
    assert [d.streak for d in decisions] == [1, 2, 3, 0, 0]
    assert json.loads(decisions[2].to_json())["switched"] is True and decisions[2].stamp_ns == 2


def test_a_single_outlier_or_alternating_evidence_never_switches(fingerprints):
    rec = BuildingRecognizer(fingerprints, active="a", window=1, switch_after=2)
    a, b, c = (frames_of(fingerprints, n, 6) for n in "abc")
    sequence = a[:3] + b[:1] + a[3:] + [b[1], c[0], b[2], c[1]]     # outliers, then b and c alternating
    decisions = [rec.update(i, e) for i, e in enumerate(sequence)]
    assert [d.best for d in decisions] == list("aaabaaa") + list("bcbc")
    assert not any(d.switched for d in decisions) and rec.active == "a"


def test_window_averaging_outvotes_an_outlier_frame(fingerprints):
    rec = BuildingRecognizer(fingerprints, active="a", window=5, switch_after=1)
    a, b = frames_of(fingerprints, "a", 8), frames_of(fingerprints, "b", 1)
    decisions = [rec.update(i, e) for i, e in enumerate(a[:4] + b + a[4:])]
    assert all(d.best == "a" and not d.switched for d in decisions)
    assert decisions[4].scores["b"] > decisions[3].scores["b"]        # the outlier is seen, just outvoted


def test_scores_are_the_best_cosine_to_each_entrys_prototypes(fingerprints):
    rec = BuildingRecognizer(fingerprints, window=1)
    scores = rec.frame_scores(fingerprints["c"][1])
    assert scores[2] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(scores[:2], [(fingerprints[n] @ fingerprints["c"][1]).max() for n in "ab"], rtol=1e-6)
    decision = rec.update(0, fingerprints["c"][1])          # no active entry: still needs switch_after decisions
    assert decision.best == "c" and decision.active is None


def test_an_external_switch_is_followed(fingerprints):
    rec = BuildingRecognizer(fingerprints, active="a", window=1, switch_after=2)
    rec.update(0, fingerprints["b"][0])
    rec.follow("c")
    decision = rec.update(1, fingerprints["b"][0])
    assert (decision.active, decision.streak, decision.switched) == ("c", 1, False)
    with pytest.raises(KeyError):
        rec.follow("nowhere")


def test_prototypes_are_unit_kmeans_centres_at_most_one_per_frame():
    rng = np.random.default_rng(0)
    centres = [unit(rng.normal(size=D)) for _ in range(3)]
    data = np.stack([unit(centres[i % 3] + 0.01 * rng.normal(size=D)) for i in range(30)])
    protos = prototypes(data, 3)
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, rtol=1e-5)
    assert sorted(int(np.argmax(protos @ c)) for c in centres) == [0, 1, 2]       # one prototype per cluster
    assert (protos @ np.stack(centres).T).max(axis=0).min() > 0.99
    assert prototypes(data[:2], 8).shape == (2, D)


def test_bench_scores_whole_one_second_windows_after_each_transition_settles():
    from tst_ros.bench.bank import settled_windows

    truth = ["a"] * 10 + ["b"] * 10
    active = [None] * 3 + ["a"] * 9 + ["b"] * 7 + ["a"]      # b recognised 2 frames late, a last-frame glitch
    # visits of 10 frames, 4 settling frames excluded, windows of 3: frames 4-6, 7-9 and 14-16, 17-19
    assert settled_windows(active, truth, stretch=10, settle=4, window=3) == [True, True, True, False]
