"""Answer a list of questions batch by batch, by either path, and count what it cost.

QuestionAnswerer picks the path once per model and settings:
  shared_prefix  (default) questions grouped by image, each image's prefix filled once and its
                 cache reused (image_groups, shared_prefix);
  per_question   every question fills its whole prompt (generation.AnswerGenerator), longest
                 prompts first: with --share_image_prefix false, for checking, and as the fallback
                 (logged with the reason) where the shared path cannot run (beam search, a model
                 whose cache it cannot share, prompts that end with the image: the "plain" template).
answer() yields (the batch's items, their answers) as each batch finishes, so callers store
answers as they come (restarts); counts holds questions, prefix fills and vision-tower images.

Ranks: rank_share() splits by image for the shared path (an image's questions and its one prefix
fill stay on one rank) and every world_size-th item otherwise, as before. Under ZeRO-3 with
several ranks (sync), every forward gathers parameters collectively, so all ranks must run the
same forwards: the number of batches is agreed (a rank with fewer repeats its last batch, or the
caller's filler question, and drops those answers), each shared batch runs exactly one prefix
fill (a batch with no new image refills one and discards it), and generate() keeps stepping
until every rank is done (synced_gpus).
"""
import logging

from llava_ln.core.distributed import DistContext, all_gather_objects
from llava_ln.evaluation.generation import AnswerGenerator, GenerationCounts, GenerationSettings
from llava_ln.evaluation.image_groups import PlannedBatch, group_by_image, plan_batches, share_by_image, shareable
from llava_ln.evaluation.shared_prefix import SharedPrefixGenerator, unsupported_reason

logger = logging.getLogger(__name__)

SHARED_PREFIX, PER_QUESTION = "shared_prefix", "per_question"


def rank_share(items: list, context: DistContext, share_image_prefix: bool) -> list:
    """This rank's items: by image for the shared path, strided for the per-question path."""
    if share_image_prefix:
        return share_by_image(items, context.rank, context.world_size)
    return context.share(items)


class QuestionAnswerer:
    def __init__(self, eval_model, settings: GenerationSettings, device, share_image_prefix: bool = True,
                 sync: DistContext | None = None):
        """sync: the ranks' context when they must run the same forwards (ZeRO-3 with several ranks)."""
        reason = unsupported_reason(eval_model.model, settings) if share_image_prefix else None
        if reason:
            logger.warning("answering question by question: image prefixes cannot be shared with %s", reason)
        self.path = SHARED_PREFIX if share_image_prefix and reason is None else PER_QUESTION
        self.sync = sync if sync is not None and sync.world_size > 1 else None
        kind = SharedPrefixGenerator if self.path == SHARED_PREFIX else AnswerGenerator
        self.generator = kind(eval_model, settings, device, synced_gpus=self.sync is not None)
        self.image_token_id = eval_model.image_token_id

    @property
    def counts(self) -> GenerationCounts:
        return self.generator.counts

    def answer(self, items: list, prompts: list, batch_size: int, filler: tuple | None = None):
        """Yield (batch items, answers) for items[i] asking prompts[i] (token ids), batch by batch.

        filler: (item, prompt), what a rank without questions of its own runs under sync (any question).
        """
        for batch, answer_ids in self.answer_ids(items, prompts, batch_size, filler):
            yield batch, self.generator.decode(answer_ids)

    def answer_ids(self, items: list, prompts: list, batch_size: int, filler: tuple | None = None):
        """As answer(), with each answer's token ids (through its stop token) instead of its text."""
        padding_only = not items and self.sync is not None and filler is not None
        if padding_only:
            items, prompts = [filler[0]], [filler[1]]
        if self.path == SHARED_PREFIX and not self._all_shareable(prompts):
            logger.warning("answering question by question: image prefixes cannot be shared with prompts that end "
                           "with the image (conversation template %r)", self.generator.eval_model.conv_template)
            self.path = PER_QUESTION  # the shared generator is an AnswerGenerator too
        groups, batches = self._plan(items, prompts, batch_size)
        runs = self._in_step([] if padding_only else [(batch, False) for batch in batches],
                             spare=batches[-1] if batches else None)
        states = {}  # group index -> its filled prefix, while a later batch needs it
        for batch, padding in runs:
            answer_ids = self._run(batch, padding, items, prompts, groups, states)
            if not padding:
                yield [items[i] for i in batch.rows], answer_ids

    def _all_shareable(self, prompts: list) -> bool:
        """Whether every prompt can be answered from its image prefix; under sync, on every rank (one path for all)."""
        mine = shareable(prompts, self.image_token_id)
        return all(all_gather_objects(self.sync, mine)) if self.sync is not None else mine

    def _plan(self, items: list, prompts: list, batch_size: int) -> tuple[list, list[PlannedBatch]]:
        if self.path == SHARED_PREFIX:
            groups = group_by_image(items, prompts, self.image_token_id)
            return groups, plan_batches(groups, batch_size)
        order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))  # less padding; memory peaks early
        return [], [PlannedBatch(order[start:start + batch_size], [], [])
                    for start in range(0, len(order), batch_size)]

    def _in_step(self, runs: list, spare: PlannedBatch | None) -> list:
        """Under sync, as many batches on every rank: the last one (or spare) repeated as padding."""
        if self.sync is None:
            return runs
        most = max(all_gather_objects(self.sync, len(runs)))
        if len(runs) < most:
            if spare is None:
                raise ValueError("under sync, a rank without questions needs a filler question")
            runs = runs + [(spare, True)] * (most - len(runs))
        return runs

    def _run(self, batch: PlannedBatch, padding: bool, items: list, prompts: list, groups: list, states: dict) -> list:
        if self.path == PER_QUESTION:
            return self.generator.generate_ids([prompts[i] for i in batch.rows], [items[i].image for i in batch.rows],
                                               [f"question {items[i].key}" for i in batch.rows])
        needed = list(dict.fromkeys(batch.row_groups))
        missing = [g for g in needed if g not in states]
        if missing:
            states.update(zip(missing, self._fill(missing, groups, items)))
        elif self.sync is not None:
            self._fill(needed[:1], groups, items)  # every rank fills once per batch; this refill is discarded
        answer_ids = self.generator.generate_ids_after(
            [states[g] for g in batch.row_groups], [groups[g].prefix for g in batch.row_groups],
            [prompts[i][len(groups[g].prefix):] for i, g in zip(batch.rows, batch.row_groups)])
        for g in needed if padding else batch.release:
            states.pop(g, None)
        return answer_ids

    def _fill(self, fill: list, groups: list, items: list) -> list:
        return self.generator.fill([groups[g].prefix for g in fill], [groups[g].image for g in fill],
                                   [f"question {items[groups[g].members[0]].key}" for g in fill])
