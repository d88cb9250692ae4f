"""Plots: written when matplotlib is there, one line saying what to install when it is not; a short run's
learning curve shows its points."""
import json

import pytest

from llava_ln.experiments import plots


def _run_dir(tmp_path, records):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(run)


def test_a_learning_curve_of_one_point_draws_a_marker(tmp_path, monkeypatch):
    plt = plots.pyplot()
    if plt is None:
        pytest.skip("matplotlib is not installed (the demo extra)")
    drawn, save = {}, plots._save

    def keep(plt_, figure, path):
        drawn["lines"] = [line for axis in figure.axes for line in axis.get_lines()]
        return save(plt_, figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    run = _run_dir(tmp_path, [{"step": 2, "loss": 1.5}, {"step": 2, "eval": {"pope": 61.0, "pope_items": 8}}])
    path = plots.learning_curves(plt, {"ln": {"run_dir": run}}, str(tmp_path / "curves.png"))
    assert open(path, "rb").read(4) == b"\x89PNG"
    assert len(drawn["lines"]) == 2  # the loss and the POPE panel, one point each
    assert all(line.get_marker() not in (None, "None", "") and len(line.get_xdata()) == 1 for line in drawn["lines"])


def test_without_matplotlib_compare_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "pyplot", lambda: None)
    assert plots.comparison_plots(str(tmp_path), {"modes": {"ln": {}}}) is None
    import llava_ln.experiments.compare as compare
    from llava_ln.commands import experiments

    (tmp_path / "comparison.md").write_text("| table |\n")
    monkeypatch.setattr(compare, "run_compare", lambda args: {"plots": plots.comparison_plots(args.output_dir,
                                                                                              {"modes": {}})})
    assert experiments.compare_main(["--output_dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "plots: none written, matplotlib is not installed (pip install 'llava-ln[demo]')"
