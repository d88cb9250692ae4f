"""Layer-representation similarity: how alike the LLM's layers' representations of the same input are.

The paper reads a lower average similarity between layers as more expressive representations (LN
tuning lower than full finetuning). Definition used here, per sample:
  1. take the hidden state after every decoder block (transformers' hidden_states without the
     embedding output: L vectors per position; the last one after the final norm, as returned);
  2. mean-pool each layer over the sample's non-pad positions (and, separately, over its image
     positions and over its text positions);
  3. cosine similarity between every pair of layers' pooled vectors: an L x L matrix.
Then, averaged over samples: `all_pairs` is the mean over pairs i < j, `adjacent` the mean over
(i, i + 1), `image` and `text` the all-pairs mean of the image-pooled and text-pooled matrices
(a sample without an image adds nothing to `image`). `matrix` is the averaged all-token matrix and
`all_pairs_se` the standard error of `all_pairs` over the samples.

`pooled_similarity` is the arithmetic alone (tests check it against a hand computation);
`checkpoint_similarity` runs a checkpoint over a LLaVA-format data file and feeds it.
"""
import torch
import torch.nn.functional as F

from llava_ln.data.args import DEFAULT_MAX_IMAGE_PIXELS


def cosine_matrix(pooled: torch.Tensor) -> torch.Tensor:
    """[L, H] pooled layer vectors -> [L, L] cosine similarities."""
    unit = F.normalize(pooled.double(), dim=-1)
    return unit @ unit.T


def pair_means(matrix: torch.Tensor) -> tuple[float, float]:
    """(mean over pairs i < j, mean over adjacent pairs) of an L x L matrix."""
    layers = matrix.shape[0]
    upper = torch.triu_indices(layers, layers, offset=1)
    if upper.shape[1] == 0:
        return float("nan"), float("nan")
    adjacent = torch.diagonal(matrix, offset=1)
    return float(matrix[upper[0], upper[1]].mean()), float(adjacent.mean())


class SimilarityAccumulator:
    """Sums per-sample cosine matrices (all tokens, image tokens, text tokens) over batches."""

    def __init__(self):
        self.sums = {"all": None, "image": None, "text": None}
        self.counts = {"all": 0, "image": 0, "text": 0}
        self.sample_all_pairs = []  # each sample's all-pairs mean: the spread gives a standard error

    def add(self, hidden_states: list, attention_mask: torch.Tensor, image_mask: torch.Tensor) -> None:
        """hidden_states: one [B, T, H] tensor per decoder block; masks: [B, T] (bool or 0/1)."""
        stacked = torch.stack([h.detach().double() for h in hidden_states], dim=1)  # [B, L, T, H]
        valid = attention_mask.bool()
        image = image_mask.bool() & valid
        for kind, mask in (("all", valid), ("image", image), ("text", valid & ~image)):
            for row in range(stacked.shape[0]):
                positions = mask[row]
                if not positions.any():
                    continue
                pooled = stacked[row][:, positions].mean(dim=1)  # [L, H]
                matrix = cosine_matrix(pooled)
                if kind == "all":
                    self.sample_all_pairs.append(pair_means(matrix)[0])
                self.sums[kind] = matrix if self.sums[kind] is None else self.sums[kind] + matrix
                self.counts[kind] += 1

    def result(self) -> dict:
        out = {}
        for kind in ("all", "image", "text"):
            mean = self.sums[kind] / self.counts[kind] if self.counts[kind] else None
            out[kind] = mean
        all_pairs, adjacent = pair_means(out["all"]) if out["all"] is not None else (None, None)
        values = self.sample_all_pairs
        spread = None
        if len(values) > 1:
            mean = sum(values) / len(values)
            spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) ** 0.5
        return {
            "all_pairs": all_pairs,
            "all_pairs_se": spread,
            "adjacent": adjacent,
            "image": pair_means(out["image"])[0] if out["image"] is not None else None,
            "text": pair_means(out["text"])[0] if out["text"] is not None else None,
            "samples": self.counts["all"],
            "matrix": out["all"].tolist() if out["all"] is not None else None,
        }


def pooled_similarity(hidden_states: list, attention_mask, image_mask) -> dict:
    accumulator = SimilarityAccumulator()
    accumulator.add(hidden_states, attention_mask, image_mask)
    return accumulator.result()


@torch.inference_mode()
def checkpoint_similarity(path: str, data_path: str, image_folder: str | None, num_samples: int,
                          batch_size: int = 8, device: str = "cpu", *,
                          max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> dict:
    """Run a checkpoint (LoRA merged) over the first num_samples records of data_path, in its own template."""
    from llava_ln.data import DataArguments, DataCollator, build_train_dataset
    from llava_ln.evaluation.model_loading import load_eval_model
    from llava_ln.model.forward import multimodal_forward

    target = torch.device(device)
    eval_model = load_eval_model(path, target, torch.float32)
    model = eval_model.model.eval()
    data_args = DataArguments(data_path=data_path, image_folder=image_folder, conv_template=eval_model.conv_template,
                              image_aspect_ratio=eval_model.image_aspect_ratio, max_image_pixels=max_image_pixels)
    dataset = build_train_dataset(data_args, eval_model.tokenizer, eval_model.image_loader.processor,
                                  eval_model.template, eval_model.image_token_id, eval_model.num_image_tokens, seed=0)
    collate = DataCollator(eval_model.tokenizer)
    accumulator = SimilarityAccumulator()
    count = min(num_samples, len(dataset))
    for start in range(0, count, batch_size):
        batch = collate([dataset[i] for i in range(start, min(count, start + batch_size))])
        inputs = {k: (v.to(target) if hasattr(v, "to") else v) for k, v in batch.items() if k != "labels"}
        output = multimodal_forward(model, **inputs, output_hidden_states=True)
        accumulator.add(list(output.hidden_states[1:]), inputs["attention_mask"],
                        inputs["input_ids"] == eval_model.image_token_id)
    return accumulator.result()
