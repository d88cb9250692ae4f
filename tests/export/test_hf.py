"""`llava-ln export --format hf`: native folders that plain transformers loads and that reproduce our model."""
import json
import os
import subprocess
import sys

import pytest
import torch
from export_helpers import make_run
from PIL import Image

from llava_ln.checkpoint.loading import load_checkpoint, model_arguments_from
from llava_ln.cli import main as cli_main
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.templates import stop_token_ids
from llava_ln.export.hf import export_hf
from llava_ln.export.probes import OurPipeline, draw_probe_images
from llava_ln.export.verify import ExportSettings
from llava_ln.model.builder import build_mllm

MODES = ("lora", "ln", "ln_simple", "full")
TOWER = {"lora": "lora", "ln": "ln"}
FAST = dict(max_new_tokens=4)
SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llm, tiny_vision):
    root = tmp_path_factory.mktemp("hf_runs")
    # lora and ln tune the tower too (its LoRA in the same adapter, its norms in trained.safetensors): every
    # export below must then carry the tuned tower, and the verification compares image features as well.
    return {mode: make_run(str(root / mode), tiny_llm("llama"), tiny_vision("clip"), mode,
                           vision_tune_mode=TOWER.get(mode, "frozen")) for mode in MODES}


@pytest.fixture(scope="module")
def exports(tmp_path_factory, runs):
    """Every mode exported; lora (the one that needs a fold) also runs the exporter's own fresh-process check."""
    root = tmp_path_factory.mktemp("hf_exports")
    done = {}
    for mode in MODES:
        settings = ExportSettings(verify=mode == "lora", **FAST)
        done[mode] = export_hf(runs[mode], str(root / mode), settings=settings, log=lambda *_: None)
    return done


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory):
    return draw_probe_images(str(tmp_path_factory.mktemp("probe_images")))["wide.png"]


@pytest.mark.slow
def test_export_verifies_itself_in_a_fresh_process(exports):
    result = exports["lora"]
    assert result.verified and result.transformers_version
    assert [c.name for c in result.comparisons] == ["wide_image", "tall_image", "follow_up", "text_only"]
    for comparison in result.comparisons:
        assert comparison.problem is None and comparison.answers_equal
        assert comparison.max_logit_diff <= comparison.logit_bound
        assert (comparison.max_feature_diff is None) == (comparison.name == "text_only")


@pytest.mark.parametrize("mode", MODES)
def test_exported_folder_is_a_native_llava_folder(exports, mode):
    folder = exports[mode].output_dir
    with open(os.path.join(folder, "config.json")) as handle:
        config = json.load(handle)
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and "auto_map" not in config
    with open(os.path.join(folder, "preprocessor_config.json")) as handle:
        image = json.load(handle)
    assert image["image_processor_type"] == "LlavaImageProcessor"
    assert (image["do_pad"], image["size"], image["crop_size"]) == (False, {"height": 28, "width": 28},
                                                                    {"height": 28, "width": 28})
    with open(os.path.join(folder, "processor_config.json")) as handle:
        processor = json.load(handle)
    assert (processor["patch_size"], processor["num_additional_image_tokens"],
            processor["vision_feature_select_strategy"]) == (14, 1, "default")
    assert not any(f.endswith(".py") for f in os.listdir(folder))
    assert not any(".lora_" in name for name in _weight_names(folder))


def _weight_names(folder):
    from safetensors import safe_open

    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as handle:
        return list(handle.keys())


def _our_answers(run, image_path, work):
    """Our model (unmerged run) through llava-ln's own pipeline, greedy with transformers' generate()."""
    source = load_checkpoint(run)
    pipeline = OurPipeline(source.manifest, source.tokenizer, source.image_processor_path)
    stops = stop_token_ids(source.tokenizer, pipeline.template)
    questions = {"image": (("user", "<image>\nWhat is in the image?"),),
                 "text": (("user", "How many sides does a triangle have?"),)}
    answers = {}
    for kind, messages in questions.items():
        from llava_ln.export.probes import Probe

        probe = Probe(kind, messages, (os.path.basename(image_path),) if kind == "image" else ())
        ids, pixels = pipeline.inputs(probe, os.path.dirname(image_path), source.model.config)
        with torch.no_grad():
            kwargs = dict(input_ids=ids[None], attention_mask=torch.ones_like(ids[None]))
            if pixels is not None:
                kwargs["pixel_values"] = pixels
            last = source.model(**kwargs).logits[0, -1]
            out = source.model.generate(**kwargs, max_new_tokens=6, do_sample=False, eos_token_id=stops,
                                        pad_token_id=source.tokenizer.pad_token_id)
        answers[kind] = {"prompt_ids": ids.tolist(), "last_logits": last, "answer": out[0, ids.shape[0]:].tolist()}
    base, _ = build_mllm(model_arguments_from(source.manifest, "auto"), source.tokenizer)
    text_ids, _ = pipeline.inputs(Probe("text", questions["text"], ()), work, base.config)
    with torch.no_grad():
        answers["base_text_last_logits"] = base(input_ids=text_ids[None]).logits[0, -1]
    return answers


@pytest.mark.slow
def test_exported_folders_reproduce_our_greedy_answers_in_a_fresh_process(exports, runs, probe_image, tmp_path):
    folders = [exports[mode].output_dir for mode in MODES]
    done = subprocess.run([sys.executable, "-I", os.path.join(SUPPORT, "export_fresh_check.py"), probe_image, *folders],
                          capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    for mode, folder in zip(MODES, folders):
        ours = _our_answers(runs[mode], probe_image, str(tmp_path))
        for kind in ("image", "text"):
            assert theirs[folder][kind]["prompt_ids"] == ours[kind]["prompt_ids"], (mode, kind)
            assert theirs[folder][kind]["answer"] == ours[kind]["answer"], (mode, kind)
            torch.testing.assert_close(torch.tensor(theirs[folder][kind]["last_logits"]), ours[kind]["last_logits"],
                                       rtol=1e-4, atol=1e-4)
        # The trained deltas really travelled: the export does not answer like the untrained base.
        moved = (torch.tensor(theirs[folder]["text"]["last_logits"]) - ours["base_text_last_logits"]).abs().max()
        assert moved > 1e-2, mode


def test_linear_connector_is_refused_with_one_line_and_exit_code_2(tmp_path, tiny_llm, tiny_vision, capsys):
    run = make_run(str(tmp_path / "run"), tiny_llm("llama"), tiny_vision("clip"), "ln", projector="linear")
    capsys.readouterr()
    code = cli_main(["export", "--checkpoint", run, "--format", "hf", "--output_dir", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "cannot export a linear connector" in captured.err and "mlp2x_gelu" in captured.err
    assert not os.path.exists(tmp_path / "out")


def test_crop_aspect_ratio_is_refused(tmp_path, tiny_llm, tiny_vision):
    run = make_run(str(tmp_path / "run"), tiny_llm("llama"), tiny_vision("clip"), "ln_simple", aspect_ratio="crop")
    with pytest.raises(LlavaLnError, match="crops the centre square and then resizes"):
        export_hf(run, str(tmp_path / "out"))


@pytest.mark.slow
def test_a_mismatching_export_fails_loudly_and_is_not_published(tmp_path, runs, monkeypatch, capsys):
    """A chat template that drifts from the run's template is caught by the fresh-process comparison."""
    import llava_ln.export.hf as hf

    real = hf.chat_template_for
    monkeypatch.setattr(hf, "chat_template_for", lambda t: real(t).replace("USER: ", "User: "))
    out = tmp_path / "out"
    code = cli_main(["export", "--checkpoint", runs["ln_simple"], "--output_dir", str(out), "--max_new_tokens", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err[-1].startswith("llava-ln: error: verification failed") and "prompt token ids differ" in err[-1]
    assert not out.exists() and (tmp_path / "out.unverified" / "config.json").exists()


def test_pad_export_pads_like_llava_15(tmp_path, tiny_llm, tiny_vision, probe_image):
    """LLaVA-1.5's expand2square (mean colour as int(255 * mean), image centred), then the tower's processor."""
    from transformers import AutoImageProcessor, AutoProcessor

    run = make_run(str(tmp_path / "run"), tiny_llm("llama"), tiny_vision("clip"), "ln_simple", aspect_ratio="pad")
    out = str(tmp_path / "out")
    export_hf(run, out, settings=ExportSettings(verify=False))
    tower = AutoImageProcessor.from_pretrained(tiny_vision("clip"))
    image = Image.open(probe_image).convert("RGB")
    side = max(image.size)
    square = Image.new("RGB", (side, side), tuple(int(255 * m) for m in tower.image_mean))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    expected = tower(images=[square], return_tensors="pt")["pixel_values"]
    exported = AutoProcessor.from_pretrained(out).image_processor(images=[image], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(exported, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["ln", "ln_simple"])
def test_head_bias_exports_only_when_zero(tmp_path, tiny_llm, tiny_vision, mode):
    """Phi's LM head has a bias the native class lacks: dropping it is fine only while it is exactly zero."""
    run = make_run(str(tmp_path / "run"), tiny_llm("phi"), tiny_vision("clip"), mode)
    out = str(tmp_path / "out")
    if mode == "ln":  # trains the head, bias included
        with pytest.raises(LlavaLnError, match=r"tensor lm_head\.bias \(300,\) has no place"):
            export_hf(run, out, settings=ExportSettings(verify=False))
    else:
        export_hf(run, out, settings=ExportSettings(verify=False))
        assert not any(name.endswith("lm_head.bias") for name in _weight_names(out))


@pytest.mark.slow
def test_bfloat16_export_verifies_exactly_and_reports_the_rounding(tmp_path, runs):
    """The fresh process gets the very bf16-rounded weights we evaluate, so even bf16 compares tightly."""
    lines = []
    result = export_hf(runs["ln"], str(tmp_path / "out"), settings=ExportSettings(dtype="bfloat16", **FAST),
                       log=lines.append)
    assert result.verified and result.dtype == torch.bfloat16
    assert all(c.max_logit_diff <= c.logit_bound for c in result.comparisons)
    assert sum("rounding to bfloat16" in line for line in lines) == 4
