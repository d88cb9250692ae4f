"""Guards: what keeps a run from going silently wrong, checked before, during and after every step.

Before anything loads (each flag's own domain is checked by core.flags.parse_flags):
  quantized_base   what a --bits 4|8 base allows: tune modes, ZeRO stages
  run_ownership    one run per folder: run ids, --overwrite_output_dir moves aside, `latest`, pruning
  shared_storage   multi-node: every rank sees the same OUTPUT_DIR and resumes the same checkpoint
  resume_files     reading resume state without trusting it: checksums, then every field's type
  resume_check     the flags that define a run, compared on resume (--allow_changed_flags)
While it runs:
  step_guard       per-step all-rank checks: non-finite loss/gradients skipped or stopping the run
  stop_signals     SIGTERM, SIGINT, SIGHUP, SIGUSR1 (--stop_signals): finish the step, checkpoint, exit 128+signal
  save_guard       saves that fail as one (disk full, non-finite tensors), nothing non-finite written

docs/reliability.md lists the faults these cover and the tests that inject them.
"""
