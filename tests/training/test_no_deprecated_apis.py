"""llava-ln calls no API transformers has deprecated: checkpointing blocks and wrapping a model in LoRA raise no
FutureWarning, checked with FutureWarnings as errors (they name APIs the next transformers release removes)."""
import warnings

from train_helpers import train_world

from llava_ln.model.args import ModelArguments
from llava_ln.model.backbones import load_tokenizer
from llava_ln.model.builder import build_mllm
from llava_ln.training.memory.policy import checkpoint_first_blocks
from llava_ln.tuning.args import TuningArguments
from llava_ln.tuning.plan import apply_tune_mode


def test_checkpointing_and_lora_raise_no_future_warning(tmp_path_factory, tiny_llm, tiny_vision):
    world = train_world(tmp_path_factory, tiny_llm, tiny_vision)
    model, _ = build_mllm(ModelArguments(model_name_or_path=world["llm"], vision_tower=world["vision"]),
                          load_tokenizer(world["llm"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model, plan = apply_tune_mode(model, TuningArguments(tune_mode="lora", lora_r=2, lora_alpha=4))
        assert checkpoint_first_blocks(model, 1) == 1
    assert plan.mode.name == "lora"


def test_loading_a_lora_run_raises_no_future_warning(tmp_path, tiny_llm, tiny_vision):
    """merge, export and eval attach a run's adapter with PeftModel.from_pretrained, which wraps as get_peft_model."""
    from export_helpers import make_run

    from llava_ln.checkpoint.loading import load_checkpoint

    run = make_run(str(tmp_path / "lora"), tiny_llm("llama"), tiny_vision("clip"), "lora", vision_tune_mode="lora")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        loaded = load_checkpoint(run)
    assert type(loaded.model).__name__ == "PeftModel"
