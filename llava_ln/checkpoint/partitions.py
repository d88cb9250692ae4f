"""Parameters that DeepSpeed ZeRO-3 has partitioned: their full shape, this rank's slice, reading and writing.

Under ZeRO-3 (built inside `deepspeed.zero.Init`) a parameter's `.data` is empty; rank r holds the
r-th `partition_numel()` elements of the flattened tensor in `param.ds_tensor` (the last rank's tail
is padding). Everything that touches weights before `deepspeed.initialize` goes through these
helpers, so the same code serves plain and partitioned parameters:

  full_shape(param)          the tensor's real shape (`ds_shape` when partitioned)
  local_range(param)         the flat [start, end) of the full tensor this rank stores
  write_local(param, fill)   fill(start, end) -> that flat range; written into this rank's storage
  set_full_value(param, v)   every rank holds v: each writes its own slice (no communication)
  gathered_value(param)      the full value on every rank (collective when partitioned)

Only DeepSpeed's documented parameter attributes (ds_shape, ds_numel, ds_tensor, partition_numel,
ds_process_group) and `deepspeed.zero.GatheredParameters` are used.
"""
import torch

from llava_ln.core.errors import LlavaLnError


def is_partitioned(param) -> bool:
    return getattr(param, "ds_tensor", None) is not None


def full_shape(param) -> tuple:
    return tuple(getattr(param, "ds_shape", param.shape))


def full_numel(param) -> int:
    return int(getattr(param, "ds_numel", param.numel()))


def local_range(param) -> tuple[int, int]:
    """Flat [start, end) of the full tensor held by this rank (all of it when not partitioned)."""
    if not is_partitioned(param):
        return 0, param.numel()
    import torch.distributed as dist

    size = param.partition_numel()
    start = size * dist.get_rank(group=param.ds_process_group)
    return min(start, param.ds_numel), min(start + size, param.ds_numel)


def _local_storage(param, name: str) -> torch.Tensor:
    if not is_partitioned(param):
        return param.data.view(-1)
    location = getattr(param.ds_tensor, "final_location", None)
    if location is not None and "nvme" in str(location).lower():
        raise LlavaLnError(f"tensor {name}: its ZeRO-3 partition lives on NVMe; loading partitions straight into "
                           "NVMe is not supported (use offload_param device cpu or none)")
    return param.ds_tensor.data


def write_local(param, fill, name: str = "?") -> None:
    """Write this rank's slice: fill(start, end) returns the flat elements [start, end) of the full tensor."""
    start, end = local_range(param)
    storage = _local_storage(param, name)
    with torch.no_grad():
        if end > start:
            values = fill(start, end).reshape(-1)
            storage[: end - start].copy_(values.to(dtype=storage.dtype, device=storage.device))
        if storage.numel() > end - start:
            storage[end - start:].zero_()  # ZeRO's padding: keep it deterministic


def set_full_value(param, value: torch.Tensor, name: str = "?") -> None:
    """Set a (possibly partitioned) parameter from its full value, which every rank holds."""
    if tuple(value.shape) != full_shape(param):
        raise ValueError(f"{name}: value of shape {tuple(value.shape)} for a tensor of shape {full_shape(param)}")
    if not is_partitioned(param):
        with torch.no_grad():
            param.copy_(value.to(dtype=param.dtype, device=param.device))
        return
    flat = value.reshape(-1)
    write_local(param, lambda start, end: flat[start:end], name)


def gathered_value(param) -> torch.Tensor:
    """A CPU copy of the full value (collective across the parameter's ranks when partitioned)."""
    if not is_partitioned(param):
        return param.detach().cpu().clone()
    import deepspeed

    with deepspeed.zero.GatheredParameters([param]):
        return param.detach().cpu().clone()
