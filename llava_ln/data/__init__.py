"""LLaVA-format data: records -> conversation templates -> exact labels -> batches.

Public entry points (see build.py): load_data_components, build_train_dataset,
build_train_sampler, DataCollator, DataArguments, get_template.
"""
from llava_ln.data.args import DataArguments
from llava_ln.data.build import DataComponents, build_train_dataset, build_train_sampler, load_data_components
from llava_ln.data.collator import DataCollator
from llava_ln.data.sampler import ModalityLengthGroupedSampler
from llava_ln.data.templates import TEMPLATE_NAMES, get_template

__all__ = [
    "DataArguments", "DataCollator", "DataComponents", "ModalityLengthGroupedSampler", "TEMPLATE_NAMES",
    "build_train_dataset", "build_train_sampler", "get_template", "load_data_components",
]
