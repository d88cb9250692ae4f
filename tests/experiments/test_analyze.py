"""Layer similarity against a hand computation; gradient statistics read back from a run's log.jsonl."""
import json
import math

import pytest
import torch

from llava_ln.experiments.analyze import grad_series, grad_summary, parse_checkpoints
from llava_ln.experiments.similarity import pooled_similarity


def _layers(*rows):
    """rows[layer][sample][position] -> one [samples, positions, 2] tensor per layer."""
    return [torch.tensor(layer, dtype=torch.float64) for layer in rows]


def test_layer_similarity_matches_a_hand_computation():
    # Two samples, three positions each, hidden size 2, three layers.
    # Sample 0: position 0 is an image token, 1 a text token, 2 padding (its huge values must not count).
    # Sample 1: text only, positions 0 and 1 real, 2 padding.
    pad = [100.0, -100.0]
    hidden = _layers(
        [[[1, 0], [1, 0], pad], [[1, 1], [1, 1], pad]],   # layer 1
        [[[0, 1], [2, 0], pad], [[1, 1], [1, 1], pad]],   # layer 2
        [[[0, 2], [0, 2], pad], [[-1, -1], [-1, -1], pad]],  # layer 3
    )
    attention = torch.tensor([[1, 1, 0], [1, 1, 0]])
    image = torch.tensor([[1, 0, 0], [0, 0, 0]])
    result = pooled_similarity(hidden, attention, image)

    # Sample 0, all tokens: means per layer (1, 0), (1, 0.5), (0, 2).
    #   cos(1,2) = 1 / sqrt(1.25) = 0.894427, cos(1,3) = 0, cos(2,3) = 1 / (sqrt(1.25) * 2) = 0.447214
    s0_pairs = (0.894427191 + 0.0 + 0.447213595) / 3
    s0_adjacent = (0.894427191 + 0.447213595) / 2
    # Sample 1: (1, 1), (1, 1), (-1, -1): cos 1, -1, -1.
    s1_pairs, s1_adjacent = -1 / 3, 0.0
    assert result["all_pairs"] == pytest.approx((s0_pairs + s1_pairs) / 2, abs=1e-8)
    assert result["adjacent"] == pytest.approx((s0_adjacent + s1_adjacent) / 2, abs=1e-8)
    # Image tokens (sample 0 only): (1, 0), (0, 1), (0, 2): cos 0, 0, 1.
    assert result["image"] == pytest.approx(1 / 3, abs=1e-8)
    # Text tokens: sample 0 (1, 0), (2, 0), (0, 2): cos 1, 0, 0 -> 1/3; sample 1 as above -> -1/3.
    assert result["text"] == pytest.approx(0.0, abs=1e-8)
    assert result["samples"] == 2
    matrix = torch.tensor(result["matrix"], dtype=torch.float64)
    assert matrix.shape == (3, 3) and torch.allclose(matrix.diagonal(), torch.ones(3, dtype=torch.float64))
    # Standard error of the two per-sample all-pairs means.
    spread = abs(s0_pairs - s1_pairs) / 2  # sample standard deviation / sqrt(2) for two values
    assert result["all_pairs_se"] == pytest.approx(spread, abs=1e-8)


def _log(tmp_path, records):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_grad_summary_and_series_from_log_lines(tmp_path):
    def line(step, norms):
        mean = sum(norms) / len(norms)
        var = sum((n - mean) ** 2 for n in norms) / len(norms)
        return {"step": step, "loss": 1.0, "grad_stats": {"all": {"norms": norms, "mean": mean, "var": var}}}

    records = _log(tmp_path, [line(2, [1.0, 3.0]), {"step": 2, "eval": {"pope": 50.0}}, line(4, [2.0, 2.0]),
                              line(4, [2.0, 4.0])])  # step 4 logged twice (a resume): the last one counts
    summary = grad_summary(records)["all"]
    assert summary["steps"] == 4 and summary["windows"] == 2
    assert summary["mean_norm"] == pytest.approx((1 + 3 + 2 + 4) / 4)
    assert summary["mean_var"] == pytest.approx((1.0 + 1.0) / 2)
    assert summary["mean_rel_var"] == pytest.approx((1 / 4 + 1 / 9) / 2)
    series = grad_series(records)
    assert series["steps"] == [1, 2, 3, 4] and series["norms"] == [1.0, 3.0, 2.0, 4.0]
    assert series["window_steps"] == [2, 4] and series["window_var"] == [1.0, 1.0]
    assert grad_summary([{"step": 1, "loss": 1.0}]) is None and not math.isnan(summary["mean_norm"])


def test_checkpoints_flag_takes_labels_and_refuses_what_is_not_a_folder(tmp_path):
    (tmp_path / "a").mkdir()
    assert parse_checkpoints(f"x={tmp_path / 'a'}") == {"x": str(tmp_path / "a")}
    with pytest.raises(Exception, match="not a folder"):
        parse_checkpoints(str(tmp_path / "missing"))
