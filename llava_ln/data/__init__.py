"""LLaVA-format data: records -> index -> conversation templates -> exact labels -> batches.

Modules, in reading order: args (flags), records (read and validate records), index (which
samples, in which batches), image_placement (<image> to the front of its turn, as LLaVA trains),
templates (messages -> text + reply spans; where generation stops), template_guard (a chat
template run with its time, memory and output bounded), images (read, square, process; every
allocation bounded), plain_text (special-token text in data stays plain text), encode (tokens and
labels, text bounded before tokenizing; the batch contract), dataset (lazy samples and the
factories the training script calls).
"""
from llava_ln.data.args import DataArguments
from llava_ln.data.dataset import DataComponents, build_train_dataset, build_train_sampler, load_data_components
from llava_ln.data.encode import DataCollator
from llava_ln.data.index import ModalityLengthGroupedSampler
from llava_ln.data.templates import TEMPLATE_NAMES, get_template

__all__ = [
    "DataArguments", "DataCollator", "DataComponents", "ModalityLengthGroupedSampler", "TEMPLATE_NAMES",
    "build_train_dataset", "build_train_sampler", "get_template", "load_data_components",
]
