"""What a quantized frozen base (--bits 4|8) allows in a training run, checked before any weight loads.

Tune modes: those that leave every linear weight of the LLM's blocks frozen (TuneMode.trains_llm_linears
is False: ln, ln_simple, lora as QLoRA, connector); the others would have to update quantized weights.

Strategies:
  * plain PyTorch and DDP: yes. The quantized layers are frozen, so DDP never reduces them.
  * DeepSpeed ZeRO-1 and ZeRO-2: yes. They partition only what trains (gradients, fp32 masters and Adam
    moments); frozen weights stay whole on every rank, quantized or not, and DeepSpeed's casting to
    bf16 skips the integer-typed packed weights. Every rank quantizes the same weights itself.
  * DeepSpeed ZeRO-3: refused. It partitions every parameter, frozen ones too, by flattening it; a
    bitsandbytes weight is packed integer data whose quantization state (block scales, shape) lives
    beside the tensor and would not follow the pieces. (Partitioning QLoRA under ZeRO-3 needs the
    weights quantized into a 16-bit storage dtype as each rank fills its partitions; llava-ln's ZeRO-3
    build creates the model partitioned inside zero.Init and fills each rank's partitions with the
    stored values as they are (training/zero/partitioned_init.py, checkpoint/sharded_load.py), quantizing
    nothing.) The quantized base is small enough to replicate: LLaVA-1.5-13B's block linears take about
    6.1 GiB at 4 bits with double quantization.
"""
from llava_ln.core.errors import LlavaLnError
from llava_ln.model.quantize import QuantSettings, quant_settings
from llava_ln.tuning.modes import get_tune_mode, refuse_on_quantized_base


def check_quantized_run(model_args, tuning_args, args) -> QuantSettings | None:
    """The run's QuantSettings (None without --bits 4/8), after refusing what cannot combine with them."""
    settings = quant_settings(model_args.bits, model_args.quant_type, model_args.double_quant)
    if settings is None:
        return None
    refuse_on_quantized_base(get_tune_mode(tuning_args.tune_mode), settings.bits)
    if args.deepspeed:
        from llava_ln.training.zero.strategy import load_zero_config

        stage = load_zero_config(args.deepspeed).get("zero_optimization", {}).get("stage", 0)
        if stage == 3:
            raise LlavaLnError(f"--deepspeed {args.deepspeed}: ZeRO stage {stage} cannot hold a --bits {settings.bits} "
                               "base (ZeRO-3 would partition its packed weights apart from their quantization "
                               "state); use zero_configs/zero2.json")
    return settings
