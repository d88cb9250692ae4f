"""Every Hugging Face `from_pretrained` goes through here: code from a model folder never runs.

A config.json whose model_type transformers does not know, or a tokenizer_config.json, with an
`auto_map` asks transformers to import Python files shipped with the model. Left to its default,
transformers then asks "run the custom code? [y/N]" on standard input, and whoever (or whatever)
answers "y" runs the folder's code. load_pretrained pins trust_remote_code=False for every loader
that takes it (transformers' Auto* and model, config, tokenizer, processor classes; PEFT never
imports code from a folder and does not take the flag), so such a folder is one line naming it,
never a prompt. tests/reliability/test_no_code_from_files.py keeps every from_pretrained call here.

Before a local folder is handed over, the metadata files transformers would read are bounded too
(core.bounded_json): each must be a regular file of reasonable size (a config.json that is a link
to /dev/zero would otherwise be read until memory runs out), and the small JSON ones must parse
within the depth and number-length bounds. A path (absolute, or starting with '.') that names no
folder is one line saying so (ModelFolderMissing), not transformers' complaint that it is a malformed
hub id: what a run folder whose backbones were moved or deleted meets first.
"""
import os

from llava_ln.core.bounded_json import METADATA_MAX_BYTES, check_regular_file, read_json
from llava_ln.core.errors import LlavaLnError

# Small JSON files, parsed here; large vocabularies only checked for kind and size.
PARSED_METADATA = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "preprocessor_config.json", "processor_config.json", "adapter_config.json", "chat_template.json",
                   "added_tokens.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")
LARGE_METADATA = ("tokenizer.json", "vocab.json", "merges.txt", "chat_template.jinja", "tokenizer.model",
                  "spiece.model", "vocab.txt")
LARGE_METADATA_MAX_BYTES = 2**30


class RemoteCodeRefused(ValueError):
    """A model folder that needs its own Python code (an auto_map transformers cannot serve natively)."""


def check_metadata_files(folder) -> None:
    """Bound the metadata files of a local model folder (no-op for a hub id or anything not a folder)."""
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        return
    for name in PARSED_METADATA:
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            read_json(path, "model file", METADATA_MAX_BYTES)
    for name in LARGE_METADATA:
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            check_regular_file(path, "model file", LARGE_METADATA_MAX_BYTES)


class ModelFolderMissing(LlavaLnError, ValueError):
    """A model path that is not a hub id (absolute, or starting with '.') and names nothing on disk.
    A ValueError too, so callers that already turn a loader's ValueError into their one-line error keep doing so."""


def check_folder_exists(folder) -> None:
    if isinstance(folder, (str, os.PathLike)):
        text = os.fspath(folder)
        if (os.path.isabs(text) or text.startswith(".")) and not os.path.exists(text):
            raise ModelFolderMissing(f"{text}: no such folder (moved or deleted?)")


def _takes_remote_code_flag(loader) -> bool:
    return not getattr(loader, "__module__", "").startswith("peft")


def load_pretrained(loader, *args, **kwargs):
    """loader.from_pretrained(*args, **kwargs) with trust_remote_code=False; the folder is the first str argument.

    A folder that needs its own code raises RemoteCodeRefused naming it (callers already turn ValueError
    into their one-line error; it reads well on its own too).
    """
    folder = next((arg for arg in args if isinstance(arg, (str, os.PathLike))), None)
    check_folder_exists(folder)
    check_metadata_files(folder)
    if _takes_remote_code_flag(loader):
        kwargs["trust_remote_code"] = False
    try:
        return loader.from_pretrained(*args, **kwargs)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise RemoteCodeRefused(
            f"{folder} needs Python code shipped with the model (an `auto_map` in its config.json or "
            "tokenizer_config.json for a model transformers does not support natively); llava-ln never runs code "
            "from a model folder") from None
