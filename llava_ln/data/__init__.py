"""LLaVA-format data: records -> index -> conversation templates -> exact labels -> batches.

Modules, in reading order:
  args             the data flags
  records          read and validate records
  index            which samples, in which batches
  image_placement  <image> to the front of its turn, as LLaVA trains
  templates        messages -> text + reply spans; where generation stops
  template_guard   a chat template run with its time, memory and output bounded
  images           read, square, process; every allocation bounded
  plain_text       special-token text in data stays plain text
  encode           tokens and labels, text bounded before tokenizing; the batch contract
  dataset          lazy samples and the factories the training script calls
  packing          padding-free micro-batches: the token-budget packer and the packed row
"""
from llava_ln.core.lazy import lazy_exports

# Importing the package imports no torch: each name loads its module when first asked for, so that the
# flag dataclasses (data.args) stay importable without torch.
_EXPORTS = {
    "DataArguments": "llava_ln.data.args",
    **dict.fromkeys(("DataComponents", "build_train_dataset", "build_train_sampler", "load_data_components"),
                    "llava_ln.data.dataset"),
    "DataCollator": "llava_ln.data.encode",
    "ModalityLengthGroupedSampler": "llava_ln.data.index",
    **dict.fromkeys(("TEMPLATE_NAMES", "get_template"), "llava_ln.data.templates"),
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
