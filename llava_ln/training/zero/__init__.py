"""DeepSpeed ZeRO: the strategy, its JSON config, and the ZeRO-3 model that is partitioned from the start.

  strategy           DeepSpeed ZeRO-1/2/3 as a Strategy, and its JSON config filled from the flags
  config_types       the JSON type of every DeepSpeed config field llava-ln fills or knows
  partitioned_init   ZeRO-3 from the start: the model created partitioned, each rank loading its partitions

Only this package and core.distributed import deepspeed; everything else sees the Strategy interface.
"""
