"""The `<image>` placeholder token and tokenizer preparation shared by model, data and export."""
from llava_ln.core.errors import LlavaLnError

IMAGE_TOKEN = "<image>"


def prepare_tokenizer(tokenizer) -> int:
    """Add `<image>` as a special token if missing and make sure a pad token exists.

    Returns the image token id. The id lives inside the vocabulary (unlike original LLaVA's
    -200) because transformers' LlavaForConditionalGeneration and vLLM expect that.
    Padding reuses an existing token (unk, else eos) so that the vocabulary grows only by
    the image token; padded positions are masked, so which token is used does not matter.
    """
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        # special=True keeps the placeholder whole (never split into sub-words).
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        fallback = tokenizer.unk_token or tokenizer.eos_token
        if fallback is None:
            raise LlavaLnError("the tokenizer has no pad, unk or eos token to pad batches with")
        tokenizer.pad_token = fallback
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def load_tokenizer(path: str):
    """AutoTokenizer from a folder or hub id, prepared for multimodal use; clear error on failure."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        raise LlavaLnError(f"cannot load a tokenizer from {path!r} ({err})") from None
    prepare_tokenizer(tokenizer)
    return tokenizer
