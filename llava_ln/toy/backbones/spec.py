"""What the toy backbones are: their architectures, the files of each, where the committed
weights live (llava_ln/toy/assets), and installing them into a world.

Both are ordinary Hugging Face checkpoints: a LlamaForCausalLM with a sentencepiece
`tokenizer.model` (laid out as Vicuna ships it) and a CLIPVisionModel with its
CLIPImageProcessor. `python -m llava_ln.toy.backbones.pretrain` rebuilds them; `llava-ln toy`
copies the committed files into DIR/llm and DIR/vision.
"""
import os
import shutil

from llava_ln.core.errors import LlavaLnError
from llava_ln.toy.world import IMAGE_SIZE, PATCH_SIZE

# The weights stay in toy/assets (setup.py's package_data for llava_ln.toy ships them).
ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
LLM_ASSET = os.path.join(ASSETS_DIR, "llm")
VISION_ASSET = os.path.join(ASSETS_DIR, "vision")

TOKENIZER_VOCAB_SIZE = 600

LLM_CONFIG = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)

VISION_CONFIG = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
    projection_dim=128,
)

# CLIP's own normalisation constants, so the processor config is the familiar one.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Files that make up each committed backbone (the install copies exactly these).
LLM_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.model",
             "tokenizer_config.json", "special_tokens_map.json")
VISION_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        do_convert_rgb=True,
    )


def _copy_files(source: str, target: str, names) -> None:
    missing = [n for n in names if not os.path.isfile(os.path.join(source, n))]
    if missing:
        raise LlavaLnError(
            f"toy backbone files missing in {source}: {', '.join(missing)}; "
            "rebuild them with `python -m llava_ln.toy.backbones.pretrain`"
        )
    os.makedirs(target, exist_ok=True)
    for name in names:
        shutil.copyfile(os.path.join(source, name), os.path.join(target, name))


def install_backbones(out_dir: str, assets_dir: str = ASSETS_DIR) -> tuple[str, str]:
    """Copy the committed LLM and vision tower into out_dir/llm and out_dir/vision."""
    llm_dir, vision_dir = os.path.join(out_dir, "llm"), os.path.join(out_dir, "vision")
    _copy_files(os.path.join(assets_dir, "llm"), llm_dir, LLM_FILES)
    _copy_files(os.path.join(assets_dir, "vision"), vision_dir, VISION_FILES)
    return llm_dir, vision_dir
