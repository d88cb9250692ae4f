"""Factories the training script and `inspect-data` call; none of them loads model weights."""
from dataclasses import dataclass

from llava_ln.core.errors import LlavaLnError
from llava_ln.data.args import DataArguments, check_data_args
from llava_ln.data.dataset import LlavaDataset
from llava_ln.data.images import ImageLoader, load_image_processor, processor_side
from llava_ln.data.index import build_index, parse_data_path
from llava_ln.data.sampler import ModalityLengthGroupedSampler
from llava_ln.data.templates import get_template
from llava_ln.model.tokens import IMAGE_TOKEN, load_tokenizer
from llava_ln.model.vision_tower import load_vision_config, num_image_tokens, select_strategy


@dataclass(frozen=True)
class DataComponents:
    tokenizer: object
    image_processor: object
    template: object
    image_token_id: int
    num_image_tokens: int


def load_data_components(model_args, data_args: DataArguments) -> DataComponents:
    """Tokenizer, image processor, template and image-token facts from configs alone (no weights)."""
    tokenizer_path = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if not tokenizer_path:
        raise LlavaLnError("--model_name_or_path (or --tokenizer_name_or_path) is required")
    tokenizer = load_tokenizer(tokenizer_path)
    vision_config, family = load_vision_config(model_args.vision_tower)
    strategy = select_strategy(family, model_args.mm_vision_select_feature)
    image_processor = load_image_processor(model_args.vision_tower)
    side = processor_side(image_processor)
    if side is not None and side != vision_config.image_size:
        raise LlavaLnError(f"--vision_tower {model_args.vision_tower!r}: its image processor makes {side}px images "
                           f"but the tower expects {vision_config.image_size}px")
    return DataComponents(
        tokenizer=tokenizer,
        image_processor=image_processor,
        template=get_template(data_args.conv_template, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        num_image_tokens=num_image_tokens(vision_config, strategy),
    )


def build_train_dataset(data_args: DataArguments, tokenizer, image_processor, template, image_token_id: int,
                        num_image_tokens: int, seed: int) -> LlavaDataset:
    """Index --data_path (validating every record) and return the lazy training dataset."""
    check_data_args(data_args)
    index = build_index(parse_data_path(data_args.data_path), data_args.image_folder, seed,
                        data_args.skip_bad_samples)
    return LlavaDataset(index, tokenizer, ImageLoader(image_processor, data_args.image_aspect_ratio), template,
                        image_token_id, num_image_tokens, data_args.model_max_length, data_args.skip_bad_samples)


def build_train_sampler(dataset: LlavaDataset, data_args: DataArguments, batch_size: int, world_size: int,
                        seed: int):
    """The modality-length sampler when --group_by_modality_length is set, else None (plain shuffling)."""
    if not data_args.group_by_modality_length:
        return None
    return ModalityLengthGroupedSampler(dataset.length_estimates, dataset.has_image, batch_size, world_size, seed)
