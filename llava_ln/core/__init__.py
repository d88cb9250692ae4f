"""The bottom layer: what every other package may use and nothing in it depends on.

  errors        LlavaLnError (one line naming the file, record, flag or tensor) and run_command
  flags         parse_flags: dataclasses from argv, unknown flags and out-of-domain values refused; --help
                without torch
  flag_domains  the domain each numeric flag declares beside it (Domain), checked in one line each
  atomic        atomic file and folder writes (a crash leaves the previous version intact)
  folder_lock   one process at a time owns an output folder (a lock the kernel drops when its holder dies)
  paths         whether a path from a file stays inside its folder; whether two folders overlap
  bounded_json  JSON from files we do not control: regular files only, sizes, depth and numbers bounded
  pretrained    every from_pretrained: trust_remote_code pinned off, the folder's metadata files bounded
  saving        save_pretrained without importing DeepSpeed (merge and export never use it)
  content_hash  sha256 of files, cached while the kernel says a file is unchanged (input fingerprints)
  constants     IMAGE_TOKEN, IGNORE_INDEX, CONNECTOR_PREFIX, PEFT_PREFIX, DTYPES
  distributed   process groups for every launcher, and the few collectives we use
  processes     child processes in groups of their own, ended on every way out; temporary folders; free ports
  lazy          package attributes imported on first use (packages whose modules import torch)
  args          flags several commands share (--seed, --output_dir, --overwrite), each declared once
  benchmarks    the benchmarks scored: names, folders, answer kinds and lengths, scoring rules, headlines
"""
