"""<image> goes to the front of its turn, as LLaVA trains (unless --keep_image_placement); LLaVA's `square` images."""
import numpy as np
import pytest
import torch
from data_helpers import make_dataset, record, save_image, write_json
from PIL import Image

from llava_ln.data.image_placement import images_first
from llava_ln.data.images import ImageLoader, load_image_processor
from llava_ln.model.backbones import load_tokenizer


def test_images_move_to_the_front_of_their_turn_like_llavas_preprocess_multimodal():
    messages = (("user", "What is this? <image>"), ("assistant", "A cat."), ("user", "  And <image> this <image>?"),
                ("assistant", "Two dogs."), ("user", "No image here."), ("assistant", "Fine."))
    assert images_first(messages) == (("user", "<image>\nWhat is this?"), ("assistant", "A cat."),
                                      ("user", "<image>\n<image>\nAnd  this ?"), ("assistant", "Two dogs."),
                                      ("user", "No image here."), ("assistant", "Fine."))
    assert images_first((("user", "<image>"), ("assistant", "x"))) == (("user", "<image>"), ("assistant", "x"))


@pytest.mark.parametrize("keep,expected", [(False, "USER: <image>\nWhat is it? ASSISTANT:"),
                                           (True, "USER: What is it? <image> ASSISTANT:")])
def test_training_text_puts_the_image_first_unless_asked_to_keep_it(tmp_path, bpe_tokenizer_dir, tiny_vision, keep,
                                                                     expected):
    save_image(str(tmp_path / "a.png"))
    path = write_json(str(tmp_path / "data.json"), [record("r1", "What is it? <image>", "A cat.", image="a.png")])
    dataset = make_dataset(path, load_tokenizer(bpe_tokenizer_dir), tiny_vision("clip"), keep_image_placement=keep)
    assert expected in dataset.process(0).text


def test_square_leaves_the_shape_to_the_processor(tiny_vision, tmp_path):
    # LLaVA's default `square`: no padding first; CLIP's processor resizes the short side and crops the centre.
    pixels = (np.random.default_rng(0).random((20, 44, 3)) * 255).astype("uint8")
    path = str(tmp_path / "wide.png")
    Image.fromarray(pixels).save(path)
    processor = load_image_processor(tiny_vision("clip"))
    direct = processor(images=[Image.open(path).convert("RGB")], return_tensors="pt")["pixel_values"]
    assert torch.equal(ImageLoader(processor, "square")([path]), direct.float())
    assert not torch.equal(ImageLoader(processor, "pad")([path]), direct.float())
