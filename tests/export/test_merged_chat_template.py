"""A merged folder carries the run's template: tokenizer.apply_chat_template renders what training saw."""
import pytest
from export_helpers import make_run
from transformers import AutoTokenizer

from llava_ln.cli import main as cli_main
from llava_ln.data.templates import get_template

CONVERSATION = [("user", "<image>\nWhat is in the image?"), ("assistant", "A red square."),
                ("user", "And the background?")]


@pytest.mark.parametrize("template", ["vicuna_v1", "plain"])
def test_apply_chat_template_on_a_merged_folder_is_the_runs_template(tmp_path, tiny_llm, tiny_vision, template):
    run = make_run(str(tmp_path / "run"), tiny_llm("llama"), tiny_vision("clip"), "ln_simple", template=template)
    merged = str(tmp_path / "merged")
    assert cli_main(["merge", "--checkpoint", run, "--output_dir", merged]) == 0
    tokenizer = AutoTokenizer.from_pretrained(merged)
    messages = [{"role": role, "content": text} for role, text in CONVERSATION]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == get_template(template, tokenizer).render_prompt(CONVERSATION)
