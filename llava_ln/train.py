"""Train a LLaVA-style model: stage 1 (the connector, plain template) or stage 2 (any --tune_mode).

    deepspeed llava_ln/train.py --deepspeed zero_configs/zero2.json ...   (one or many nodes)
    torchrun --nproc_per_node 8 llava_ln/train.py ...                     (DDP, or ZeRO with --deepspeed)
    python -m llava_ln.train ...      llava-ln train ...                  (one process; CPU works too)

Reads top to bottom: flags -> model -> tuning -> data -> strategy -> train -> save.
See docs/training.md for the flags and the run-folder layout.
"""
# ruff: noqa: E402  (the imports follow the sys.path fix below)
import logging
import os
import sys

if __name__ == "__main__" and not __package__:
    # Run as a file (the deepspeed launcher does that): import the package, not its siblings.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))

from transformers import set_seed

from llava_ln.checkpoint.manifest import run_manifest
from llava_ln.checkpoint.run_folder import frozen_connector_values, load_connector
from llava_ln.checkpoint.run_start import resolve_start
from llava_ln.core.distributed import distributed_session
from llava_ln.core.folder_lock import owned_folder
from llava_ln.data import DataCollator, build_train_dataset, build_train_sampler, load_data_components
from llava_ln.evaluation.during_training import in_training_hooks
from llava_ln.kernels import apply_kernels
from llava_ln.model.parts import unwrap
from llava_ln.model.quantize import quantize_llm_linears
from llava_ln.training.checkpointing import Checkpointer, RunIdentity, restore_exact_connector
from llava_ln.training.command_line import read_train_command
from llava_ln.training.data_order import DataOrder, total_steps_for
from llava_ln.training.guards.resume_check import check_resume_flags, run_defining_flags, run_record
from llava_ln.training.guards.run_ownership import run_inputs
from llava_ln.training.guards.stop_signals import StopSignals
from llava_ln.training.loop import Loop
from llava_ln.training.memory.policy import checkpoint_first_blocks, resolve_precision
from llava_ln.training.memory.recompute import resolve_recompute
from llava_ln.training.optim import trainable_state_savings, use_sparse_embedding_grad
from llava_ln.training.packing import (
    build_packer,
    check_packing_model,
    collator_for,
    one_row_for,
    samples_or_tokens_per_step,
)
from llava_ln.training.reporting import (
    Reporter,
    configure_logging,
    prepare_output_dir,
    resolved_config,
    write_run_info,
)
from llava_ln.training.strategy import TorchStrategy
from llava_ln.training.zero.partitioned_init import build_training_model
from llava_ln.tuning.plan import apply_tune_mode

logger = logging.getLogger("llava_ln.train")


def main(argv=None) -> int:
    # 1. Flags (LLaVA's names too); a multimodal --model_name_or_path decides the model flags it fixes.
    command = read_train_command(sys.argv[1:] if argv is None else argv)  # every check that needs no model
    model_args, data_args, tuning_args, args = (command.model_args, command.data_args, command.tuning_args,
                                                command.args)
    llava_flags, quantization = command.llava_flags, command.quantization
    llava_flags.apply_cache_dir()
    data_seed = args.seed if args.data_seed is None else args.data_seed
    with StopSignals(args.stop_signals) as stops, distributed_session("cpu" if args.use_cpu else "auto",
                                                                      use_deepspeed=bool(args.deepspeed),
                                                                      local_rank_flag=args.local_rank) as context, \
            owned_folder(context, args.output_dir, "train"):  # one process per OUTPUT_DIR (core.folder_lock)
        configure_logging(context)
        start = resolve_start(model_args, data_args, llava_flags.explicit)
        llava_flags.report(start.decided if start else None)
        precision = resolve_precision(args, context.device)
        run_start = prepare_output_dir(args, context, run_inputs(model_args, data_args, args))
        resume_dir = run_start.resume_dir
        # Resume continues the saved run: the flags that define it must match (or be allowed to change).
        run_flags = run_defining_flags(model_args, data_args, tuning_args, args, context=context,
                                       precision=precision.name,
                                       global_batch_size=samples_or_tokens_per_step(args, context.world_size))
        changed = check_resume_flags(resume_dir, run_flags, args.allow_changed_flags)
        set_seed(args.seed)

        # 2. Model: LLM + vision tower + connector, frozen weights already in the compute dtype.
        data = load_data_components(model_args, data_args)
        # Under ZeRO-3 created partitioned and filled shard by shard, each rank reading only its partitions.
        model, spec = build_training_model(model_args, data.tokenizer, args=args, context=context, precision=precision)
        quantize_llm_linears(model, quantization, device=context.device)  # no-op without --bits 4|8
        if args.packing:
            check_packing_model(model)  # its attention must keep packed samples apart

        # 3. Tuning: what trains; stage 2 starts from the stage-1 connector (or the multimodal start's own).
        model, plan = apply_tune_mode(model, tuning_args,
                                      connector_pretrained=bool(args.pretrain_mm_mlp_adapter or start))
        llava_flags.warn_ineffective(plan, args)
        stage1_values = load_connector(model, args.pretrain_mm_mlp_adapter) if args.pretrain_mm_mlp_adapter else None
        # Kernels sit below tuning: lean modules (and the fused loss) go into the tuned model; then what recomputes.
        kernels = apply_kernels(model, args.kernels, context.device)
        if args.sparse_embedding_grad:
            logger.info(use_sparse_embedding_grad(model, context))
        recompute = resolve_recompute(args, model, model_args, data_args=data_args, tuning_args=tuning_args,
                                      kernels_backend=kernels.backend, precision=precision, context=context,
                                      tokenizer=data.tokenizer,
                                      trainable_savings=trainable_state_savings(model, args))
        checkpoint_first_blocks(model, recompute.checkpointed_blocks)
        logger.info(recompute.summary())
        names_by_id = {id(p): n for n, p in unwrap(model).named_parameters()}

        # 4. Data: lazy dataset, a fixed order per (seed, epoch), THE batch contract.
        dataset = build_train_dataset(data_args, data.tokenizer, data.image_processor, data.template,
                                      data.image_token_id, data.num_image_tokens, data_seed)
        # The grouped sampler sorts by length across all micro-batches of one optimizer step, so a
        # process with accumulation k reads what k ranks read.
        micro_batches_per_step = context.world_size * args.gradient_accumulation_steps
        order = DataOrder(dataset_size=len(dataset), batch_size=args.per_device_train_batch_size,
                          world_size=context.world_size, accumulation=args.gradient_accumulation_steps,
                          seed=data_seed, grouped_sampler=build_train_sampler(
                              dataset, data_args, args.per_device_train_batch_size, micro_batches_per_step, data_seed),
                          packer=build_packer(dataset, args.max_tokens_per_batch, data_seed, one_row_for(model), context)
                          if args.packing else None)
        total_steps = total_steps_for(args, order)

        # 5. Strategy: plain PyTorch / DDP, or DeepSpeed ZeRO; the optimizer gets the per-group rates.
        if args.deepspeed:
            from llava_ln.training.zero.strategy import DeepSpeedStrategy

            strategy = DeepSpeedStrategy(args, context, precision, hidden_size=model.config.text_config.hidden_size)
        else:
            strategy = TorchStrategy(args, context, precision)
        groups = plan.param_groups(model, args.learning_rate, args.weight_decay)
        handed = [{"name": g["name"], "params": list(g["params"])} for g in groups]
        stage1_frozen = frozen_connector_values(model, plan, stage1_values)
        strategy.setup(model, groups)
        restore_exact_connector(strategy, model, stage1_values)

        # 6. Train (resuming exactly when asked).
        identity = RunIdentity(tune_mode=plan.mode.name,
                               global_batch_size=samples_or_tokens_per_step(args, context.world_size),
                               dataset_size=len(dataset), total_steps=total_steps, world_size=context.world_size,
                               run_id=run_start.run_id, flags=run_flags,
                               packed_row_tokens=order.packer.row_tokens if order.packer else None)
        manifest = run_manifest(spec, model_args, data_args, plan, args.pretrain_mm_mlp_adapter)
        checkpointer = Checkpointer(context=context, strategy=strategy, model=model, plan=plan, manifest=manifest,
                                    final_dtype=plan.saved_dtype(precision.compute_dtype),
                                    stage1_connector=stage1_frozen)
        hooks = in_training_hooks(args, context, model, data=data, image_aspect_ratio=data_args.image_aspect_ratio,
                                  precision=precision, total_steps=total_steps,
                                  zero_stage=strategy.zero_stage)  # --eval_benchmarks
        loop = Loop(args=args, context=context, strategy=strategy, checkpointer=checkpointer, dataset=dataset,
                    collate_fn=collator_for(args, DataCollator(data.tokenizer), pad_token_id=data.tokenizer.pad_token_id,
                                            packer=order.packer), data_order=order, total_steps=total_steps,
                    identity=identity, stops=stops, hooks=hooks)
        start_step = loop.resume(resume_dir).global_step if resume_dir else 0
        config = resolved_config(model_args, data_args, tuning_args, args=args, context=context, precision=precision,
                                 spec=spec, strategy=strategy, total_steps=total_steps,
                                 steps_per_epoch=order.steps_per_epoch(), dataset_size=len(dataset))
        config["llava_flags"] = llava_flags.record()
        if args.packing:  # a step reads a token budget, not a number of samples
            config["resolved"].update(global_batch_size=None, packed_row_tokens=order.packer.row_tokens,
                                      tokens_per_step=samples_or_tokens_per_step(args, context.world_size))
        config["resolved"].update(kernels=kernels.as_dict(), gradient_checkpointing=recompute.as_dict())
        config["resolved"].update(run_record(run_start, changed))
        if context.is_main:
            write_run_info(args.output_dir, config, trainable_table=plan.table(), optimizer=strategy.optimizer,
                           handed_groups=handed, names_by_id=names_by_id)
            logger.info("training %d steps (%d per epoch), %s, %s, %d rank(s)", total_steps,
                        order.steps_per_epoch(), precision.name, type(strategy).__name__, context.world_size)
        reporter = Reporter(args, context, total_steps=total_steps, start_step=start_step, config=config)
        if resume_dir:
            reporter.event(start_step, {"event": "resume", **run_record(run_start, changed)})
        stops.start_training()
        try:
            state = loop.run(reporter)
        finally:
            reporter.close()

        # 7. Save: the mode's trained tensors + manifest (the stage-1 connector too when it stayed frozen).
        checkpointer.save_run_folder(args.output_dir, state.global_step)
        dataset.log_skip_summary()
        if context.is_main:
            print(reporter.summary(state.global_step), flush=True)
    return 0


if __name__ == "__main__":
    from llava_ln.core.errors import run_command

    sys.exit(run_command(main, sys.argv[1:]))

