"""A train command line read and checked before anything loads: read_train_command, train.py's first step.

LLaVA's flag names are translated (training.llava_flags), every flag is parsed against its declared
domain, and every refusal that needs no model runs: flag combinations, the DeepSpeed config file, a
quantized base's limits, --packing's combinations, the tuning modes' names.
"""
from dataclasses import dataclass

from llava_ln.core.flags import parse_command_flags
from llava_ln.data.args import DataArguments
from llava_ln.model.args import ModelArguments
from llava_ln.model.quantize import QuantSettings
from llava_ln.training.args import TRAIN_FLAGS, TrainingArguments, check_training_args
from llava_ln.training.guards.quantized_base import check_quantized_run
from llava_ln.training.llava_flags import LlavaFlags, translate_llava_flags
from llava_ln.training.packing import check_packing_combination
from llava_ln.training.zero.config_types import check_zero_config_file
from llava_ln.tuning.args import TuningArguments, check_tuning_names


@dataclass(frozen=True, kw_only=True)
class TrainCommand:
    model_args: ModelArguments
    data_args: DataArguments
    tuning_args: TuningArguments
    args: TrainingArguments
    llava_flags: LlavaFlags  # what the LLaVA-name translation did (reported once logging is up)
    quantization: QuantSettings | None  # --bits 4|8, else None


def read_train_command(argv) -> TrainCommand:
    """Parse and check a train command line (LLaVA's names allowed); a LlavaLnError names the first problem."""
    argv, llava_flags = translate_llava_flags(argv)
    model_args, data_args, tuning_args, args = parse_command_flags(argv, TRAIN_FLAGS)
    check_training_args(args)  # combinations of flags; each flag's own domain was checked by parse_flags
    check_zero_config_file(args.deepspeed)  # every field's type and domain, the optimizer type: before any model
    quantization = check_quantized_run(model_args, tuning_args, args)  # --bits 4|8: refuse what cannot combine
    check_packing_combination(args, data_args, llava_flags.explicit)  # --packing: token budgets, not sample counts
    check_tuning_names(tuning_args)
    return TrainCommand(model_args=model_args, data_args=data_args, tuning_args=tuning_args, args=args,
                        llava_flags=llava_flags, quantization=quantization)
