"""The dataset end to end: skip-and-count, truncation, several files, batches, workers, images."""
import logging
import os

import numpy as np
import pytest
import torch
from data_helpers import image_record, make_dataset, record, save_image, vision_facts, write_json
from torch.utils.data import DataLoader

from llava_ln.core.constants import IGNORE_INDEX
from llava_ln.core.errors import LlavaLnError
from llava_ln.data.encode import DataCollator, Encoded, truncate
from llava_ln.data.images import ImageLoader
from llava_ln.model.backbones import load_tokenizer

LONG_QUESTION = " ".join(["describe the scene in detail please"] * 30)


@pytest.fixture(scope="module")
def tokenizer(bpe_tokenizer_dir):
    return load_tokenizer(bpe_tokenizer_dir)


@pytest.fixture()
def images(tmp_path):
    save_image(str(tmp_path / "ok.png"))
    save_image(str(tmp_path / "wide.png"), size=(60, 20), colour=(20, 20, 220))
    with open(tmp_path / "corrupt.png", "wb") as handle:
        handle.write(b"not an image at all")
    return tmp_path


def _mixed_records():
    return [
        image_record("img-ok", "ok.png"),
        record("txt-ok", "Hello there?", "Hi."),
        {"id": "no-turns", "conversations": []},  # bad structure
        record("txt-truncated", LONG_QUESTION, "yes"),  # reply lies beyond --model_max_length
        image_record("img-corrupt", "corrupt.png"),  # unreadable when read
        record("bad-from", "q", "a") | {"conversations": [{"from": "bot", "value": "a"}]},  # bad structure
        image_record("img-ok-2", "wide.png"),
    ]


def test_skip_and_count(tokenizer, tiny_vision, images, caplog):
    path = write_json(str(images / "data.json"), _mixed_records())
    with caplog.at_level(logging.WARNING, logger="llava_ln"):
        dataset = make_dataset(path, tokenizer, tiny_vision("clip"), model_max_length=400, skip_bad_samples=True)
        assert len(dataset) == 5  # two bad structures left out while indexing
        for _ in range(2):  # two epochs: each skip is logged once, never re-read
            samples = [dataset[i] for i in range(len(dataset))]
    ids = [s["id"] for s in samples]
    assert set(ids) == {"img-ok", "txt-ok", "img-ok-2"}
    # A skipped index is replaced by the next usable sample of the same modality.
    assert ids == ["img-ok", "txt-ok", "txt-ok", "img-ok-2", "img-ok-2"]
    assert all((s["labels"] != IGNORE_INDEX).any() for s in samples)
    assert dataset.skip_counts() == {"bad_record": 3, "truncated": 1}
    assert dataset.skipped_count == 4
    skips = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skips) == 4
    assert sum("'img-corrupt'" in m for m in skips) == 1 and sum("'txt-truncated'" in m for m in skips) == 1
    with caplog.at_level(logging.INFO, logger="llava_ln"):
        assert dataset.log_skip_summary() == 4
    assert "4 of 7 samples skipped (3 bad records, 1 with every supervised token truncated)" in caplog.text


def test_skip_counts_reach_the_main_process_from_workers(tokenizer, tiny_vision, images):
    path = write_json(str(images / "data.json"), _mixed_records())
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), model_max_length=400, skip_bad_samples=True)
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=DataCollator(tokenizer))
    seen = [batch["sample_ids"][0] for batch in loader]
    assert len(seen) == 5 and "img-corrupt" not in seen and "txt-truncated" not in seen
    assert dataset.skip_counts() == {"bad_record": 3, "truncated": 1}


def test_truncation_is_skipped_even_without_skip_flag(tokenizer, tiny_vision, images):
    path = write_json(str(images / "data.json"), [record("long", LONG_QUESTION, "yes"), record("short", "q?", "a.")])
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), model_max_length=400)
    assert dataset[0]["id"] == "short" and dataset.skip_counts()["truncated"] == 1


def test_truncation_keeps_a_partial_reply(tokenizer, tiny_vision, images):
    reply = "there are two green triangles and one yellow circle"
    path = write_json(str(images / "data.json"), [record("r", "q?", reply)])
    full = make_dataset(path, tokenizer, tiny_vision("clip")).process(0).encoded
    cut = len(full) - 5
    short = make_dataset(path, tokenizer, tiny_vision("clip"), model_max_length=cut).process(0).encoded
    assert short.input_ids == full.input_ids[:cut] and short.labels == full.labels[:cut]
    assert 0 < short.supervised_count < full.supervised_count


def test_truncation_drops_an_image_it_would_cut():
    # 2 text tokens, image at 2..5 (4 positions), 2 text tokens, image at 8..11, 3 text tokens.
    ids = [1, 2] + [9] * 4 + [3, 4] + [9] * 4 + [5, 6, 7]
    labels = [IGNORE_INDEX] * 12 + [5, 6, 7]
    encoded = Encoded(ids, labels, [2, 8])
    assert truncate(encoded, 15, 4) is encoded
    cut = truncate(encoded, 10, 4)  # would cut the second image after 2 of its 4 positions
    assert cut.input_ids == ids[:8] and cut.image_starts == [2]
    assert truncate(encoded, 4, 4).image_starts == [] and len(truncate(encoded, 4, 4)) == 2


def test_multiple_files_counts_and_deterministic_subsample(tokenizer, tiny_vision, images):
    first = write_json(str(images / "a.json"), [record(f"a{i}", "q?", "a.") for i in range(6)])
    second = write_json(str(images / "b.jsonl"), [record(f"b{i}", "q?", "a.") for i in range(20)], jsonl=True)

    def ids(seed, spec=f"{first},{second}:5"):
        dataset = make_dataset(spec, tokenizer, tiny_vision("clip"), seed=seed)
        return [dataset.index.conversation(i).id for i in range(len(dataset))]

    chosen = ids(seed=7)
    assert len(chosen) == 11 and chosen[:6] == [f"a{i}" for i in range(6)]
    picked = chosen[6:]
    assert all(p.startswith("b") for p in picked) and picked == sorted(picked, key=lambda x: int(x[1:]))
    assert ids(seed=7) == chosen  # same seed, same subset
    assert len({tuple(ids(seed=s)[6:]) for s in range(5)}) > 1  # the seed matters
    with pytest.raises(LlavaLnError, match=r"b\.jsonl:50: the file has only 20 usable records"):
        ids(seed=0, spec=f"{second}:50")


def test_relative_images_resolve_against_image_folder(tokenizer, tiny_vision, images, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("data_elsewhere")
    path = write_json(str(elsewhere / "data.json"), [image_record("i", "ok.png")])
    with pytest.raises(LlavaLnError, match="image file not found"):
        make_dataset(path, tokenizer, tiny_vision("clip"))
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"), image_folder=str(images))
    assert dataset[0]["pixel_values"].shape == (1, 3, 28, 28)


def test_collator_makes_the_batch_contract(tokenizer, tiny_vision, images):
    two_images = record("two", "<image> and <image>: same?", "No.", image=["ok.png", "wide.png"])
    path = write_json(str(images / "data.json"), [two_images, record("txt", "Hello?", "Hi."),
                                                  image_record("one", "ok.png")])
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"))
    samples = [dataset[i] for i in range(3)]
    batch = DataCollator(tokenizer)(samples)
    lengths = [len(s["input_ids"]) for s in samples]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, max(lengths))
    assert batch["input_ids"].dtype == batch["labels"].dtype == batch["attention_mask"].dtype == torch.long
    for row, sample in enumerate(samples):
        n = lengths[row]
        assert torch.equal(batch["input_ids"][row, :n], sample["input_ids"])
        assert (batch["input_ids"][row, n:] == tokenizer.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
    assert batch["image_counts"].tolist() == [2, 0, 1]
    assert batch["pixel_values"].shape == (3, 3, 28, 28) and batch["pixel_values"].dtype == torch.float32
    assert torch.equal(batch["pixel_values"][2], samples[2]["pixel_values"][0])
    assert batch["sample_ids"] == ["two", "txt", "one"]
    assert DataCollator(tokenizer)([samples[1]])["pixel_values"] is None


def test_batches_feed_the_training_forward(tiny_llm, tiny_vision, images):
    """The collated batch runs through llava_ln.model.forward.multimodal_forward and gives a finite loss."""
    from llava_ln.model.args import ModelArguments
    from llava_ln.model.builder import build_mllm
    from llava_ln.model.forward import multimodal_forward

    args = ModelArguments(model_name_or_path=tiny_llm("llama"), vision_tower=tiny_vision("clip"),
                          attn_implementation="eager")
    llm_tokenizer = load_tokenizer(args.model_name_or_path)
    model, spec = build_mllm(args, llm_tokenizer)
    path = write_json(str(images / "data.json"), [image_record("one", "ok.png"), record("txt", "Hello?", "Hi.")])
    dataset = make_dataset(path, llm_tokenizer, args.vision_tower)
    assert (dataset.image_token_id, dataset.num_image_tokens) == (spec.image_token_id, spec.num_image_tokens)
    batch = DataCollator(llm_tokenizer)([dataset[0], dataset[1]])
    loss = multimodal_forward(model, **batch).loss
    assert torch.isfinite(loss) and loss.item() > 0


@pytest.mark.parametrize("aspect", ["pad", "resize", "crop"])
def test_aspect_ratio_modes(tiny_vision, images, aspect):
    processor, _ = vision_facts(tiny_vision("clip"))
    loader = ImageLoader(processor, aspect)
    wide = loader([str(images / "wide.png")])  # 60x20: blue ellipse on a light background
    assert wide.shape == (1, 3, 28, 28)
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    pixels = wide[0] * std + mean  # back to 0..1
    top_row = pixels[:, 0, :]
    if aspect == "pad":  # the top rows are padding in the processor's mean colour
        assert torch.allclose(top_row, mean.view(3, 1).expand_as(top_row), atol=0.02)
    else:  # resize and crop keep image content (the light background) at the top
        assert top_row.mean() > 0.9
    if aspect == "crop":  # the centre square is mostly the blue ellipse
        assert pixels[2].mean() > pixels[0].mean() + 0.3


def test_rgb_conversion_of_other_modes(tiny_vision, tmp_path):
    from PIL import Image

    processor, _ = vision_facts(tiny_vision("clip"))
    Image.new("L", (30, 30), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (30, 30), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent
    pixels = ImageLoader(processor, "pad")([str(tmp_path / "grey.png"), str(tmp_path / "clear.png")])
    assert pixels.shape == (2, 3, 28, 28)
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    assert torch.allclose(pixels[1] * std + mean, torch.ones(3, 28, 28), atol=0.02)  # shown on white


def test_dataset_does_not_hold_python_records(tokenizer, tiny_vision, images):
    path = write_json(str(images / "data.json"), [record(f"r{i}", "q?", "a.") for i in range(50)])
    dataset = make_dataset(path, tokenizer, tiny_vision("clip"))
    assert isinstance(dataset.index.store._buffer, np.ndarray)
    assert dataset.index.store.nbytes < os.path.getsize(path) + 50 * 16
