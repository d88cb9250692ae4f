"""A training step at a reference shape with random weights, timed: what the throughput benchmarks share.

  shape_model_args  a shape's configs (llava_ln.model.shapes) written to a folder, as ModelArguments
  materialise       a model built on the meta device -> random weights on the device
  device_batch      the collator's contract at a given shape (training.memory.step_account.synthetic_batch)
                    with real pixels, on the device, with the attention mask the collator adds
  timed_steps       warm-up calls, then timed calls (synchronised on a GPU)
  print_results     one JSON line per configuration; running out of GPU memory is a line too
  versions_line     the package versions every result file starts with
"""
import gc
import json
import time

import torch

from llava_ln.model.args import ModelArguments
from llava_ln.model.parts import unwrap
from llava_ln.model.shapes import write_shape
from llava_ln.training.memory.step_account import synthetic_batch
from llava_ln.tuning.groups import is_norm_module


def shape_model_args(root: str, shape: str, attn_implementation: str) -> ModelArguments:
    llm, vision = write_shape(root, shape)
    return ModelArguments(model_name_or_path=llm, vision_tower=vision, mm_projector_type="mlp2x_gelu",
                          attn_implementation=attn_implementation)


def materialise(model, device, dtype) -> None:
    """Meta model -> random weights on device: norms 1, biases 0, everything else N(0, 0.02).

    transformers' initialize_weights() fills the buffers (rotary frequencies, CLIP position
    ids); parameters are drawn here for all of them, since its per-tensor "already
    initialised" flags can survive from the meta build and leave some tensors empty.
    """
    model.to_empty(device=device)
    llava = unwrap(model)
    llava.initialize_weights()
    with torch.no_grad():
        norm_params = {id(p) for m in llava.modules() if is_norm_module(m) for p in m.parameters(recurse=False)}
        for name, param in llava.named_parameters():
            if id(param) in norm_params:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02)
        for name, buffer in llava.named_buffers():
            if name.endswith("position_ids"):
                buffer.copy_(torch.arange(buffer.shape[-1], device=device).expand_as(buffer))
            elif buffer.is_floating_point() and not torch.isfinite(buffer).all():
                raise RuntimeError(f"buffer {name} was not initialised by this transformers version")
    model.to(dtype)


def device_batch(model, spec, batch: int, seq: int, device) -> dict:
    config = unwrap(model).config
    synthetic = synthetic_batch(spec, image_size=config.vision_config.image_size,
                                vocab_size=config.text_config.vocab_size, batch=batch, seq=seq, pixel_device=device)
    moved = {key: value.to(device) if torch.is_tensor(value) else value for key, value in synthetic.items()}
    moved["attention_mask"] = torch.ones_like(moved["input_ids"])
    return moved


def timed_steps(step, warmup: int, steps: int, device) -> tuple[list, list]:
    """Call step() warmup + steps times: (seconds of each timed call, what every call returned)."""
    times, returned = [], []
    for index in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        returned.append(step())
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - tick)
    return times, returned


def print_results(runs, device) -> None:
    """runs: (label, measure) pairs. Prints measure()'s dict as one JSON line; a run that runs out of GPU
    memory prints its label (a dict) with error "OOM" instead, and the next run goes on."""
    for label, measure in runs:
        try:
            print(json.dumps(measure()), flush=True)
        except torch.OutOfMemoryError as err:
            print(json.dumps({**label, "impl": "llava-ln", "error": "OOM", "detail": str(err)[:200]}), flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def versions_line(*packages: str) -> str:
    """JSON of torch's, transformers', peft's and these packages' versions, and impl "llava-ln"."""
    import importlib

    versions = {name: importlib.import_module(name).__version__ for name in ("torch", "transformers", "peft",
                                                                            *packages)}
    return json.dumps({**versions, "impl": "llava-ln"})
