"""The training forward pass: splice image features into the token embeddings, then run Llava.

Why not just call model(input_ids, pixel_values)? Two reasons:
  * text-only batches: under ZeRO-3 every rank must run the vision tower and connector each
    step (their parameters are gathered collectively), so a text-only batch runs one dummy
    image whose features enter the graph with weight zero;
  * error messages: a placeholder/feature count mismatch names the offending sample.
Generation uses the native model directly; this module is only the training path.

Under autocast the token embeddings enter the blocks in the autocast dtype. Trainable embeddings
keep an fp32 master (`ln`, `full`), and an fp32 lookup would make the whole residual stream fp32:
every norm would then save its input in fp32 for backward (8 KB more per token per norm at
width 4096) although every matmul runs in the compute dtype anyway. The cast is differentiable,
so the fp32 master still receives its gradient.
"""
import torch
from torch import nn
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast

from llava_ln.core.errors import LlavaLnError
from llava_ln.model.parts import connector_of, unwrap, vision_tower_of


def image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Connector output for a stack of images: [num_images, tokens_per_image, llm_hidden]."""
    llava = unwrap(model)
    tower = vision_tower_of(model)
    tower_dtype = next(tower.parameters()).dtype
    # A frozen tower (--vision_tune_mode frozen, the default) keeps no activations for backward; one that trains does.
    tower_trains = any(p.requires_grad for p in tower.parameters())
    with torch.set_grad_enabled(tower_trains and torch.is_grad_enabled()):
        outputs = tower(pixel_values.to(tower_dtype), output_hidden_states=True)
        selected = outputs.hidden_states[llava.config.vision_feature_layer]
        if llava.config.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]  # drop CLS
    connector = connector_of(model)
    connector_dtype = next(connector.parameters()).dtype
    return connector(selected.to(connector_dtype))


def check_image_tokens(image_mask: torch.Tensor, image_counts: torch.Tensor, tokens_per_image: int, *,
                       sample_ids: list[str] | None = None, position_ids: torch.Tensor | None = None) -> None:
    """Each sample must hold exactly tokens_per_image placeholders per image it carries.

    position_ids: a packed row's (restarting at 0 at each sample); its samples are then counted one by one."""
    if position_ids is not None:
        sample_of_token = (position_ids.flatten() == 0).cumsum(0) - 1
        found = torch.bincount(sample_of_token[image_mask.flatten().to(sample_of_token.device)],
                               minlength=len(image_counts)).tolist()
    else:
        found = image_mask.sum(dim=1).tolist()
    expected = [int(c) * tokens_per_image for c in image_counts.tolist()]
    for index, (have, want) in enumerate(zip(found, expected)):
        if have != want:
            name = sample_ids[index] if sample_ids is not None else f"#{index} in the batch"
            raise LlavaLnError(
                f"sample {name}: {have} image placeholder positions but its "
                f"{want // tokens_per_image if tokens_per_image else 0} image(s) yield {want} features"
            )


def in_autocast_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in the active autocast dtype of its device (unchanged when autocast is off)."""
    device_type = tensor.device.type
    try:
        if not torch.is_autocast_enabled(device_type):
            return tensor
        dtype = torch.get_autocast_dtype(device_type)
    except (RuntimeError, ValueError):  # device types autocast does not know (meta)
        return tensor
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def dummy_pixel_values(model, device) -> torch.Tensor:
    size = vision_tower_of(model).config.image_size
    return torch.zeros(1, 3, size, size, device=device)


def multimodal_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    labels: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    image_counts: torch.Tensor | None = None,
    sample_ids: list[str] | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs,
) -> LlavaCausalLMOutputWithPast:
    """Run the model on a (possibly mixed text-only / image) batch; returns the model output.

    position_ids: given only for a packed row (data.packing); the attention mask and the KV cache are then left
    out, so that transformers confines attention to each sample from the restarting position ids."""
    llava = unwrap(model)
    image_mask = input_ids == llava.config.image_token_id
    if image_counts is not None:
        check_image_tokens(image_mask, image_counts, llava.config.image_seq_length, sample_ids=sample_ids,
                           position_ids=position_ids)
    if position_ids is not None:
        # transformers reads packed samples from the position ids only with no 2D mask and no KV cache.
        attention_mask = None
        kwargs.update(position_ids=position_ids, use_cache=False)
    embeddings = in_autocast_dtype(llava.get_input_embeddings()(input_ids))
    has_images = pixel_values is not None and pixel_values.shape[0] > 0
    features = image_features(model, pixel_values if has_images else dummy_pixel_values(model, input_ids.device))
    if has_images:
        if image_mask.sum().item() != features.shape[0] * features.shape[1]:
            raise LlavaLnError(
                f"batch has {int(image_mask.sum())} image placeholder positions but its images yield "
                f"{features.shape[0] * features.shape[1]} features"
            )
        # .to(): a no-op in training; in meta-device accounting the ids (and so the mask) stay on the CPU.
        embeddings = embeddings.masked_scatter(image_mask.unsqueeze(-1).to(embeddings.device),
                                               features.to(embeddings.dtype))
    else:
        # Zero-weight use keeps the connector in the graph: same collectives, zero gradient.
        embeddings = embeddings + 0.0 * features.sum().to(embeddings.dtype)
    return model(inputs_embeds=embeddings, attention_mask=attention_mask, labels=labels, **kwargs)
