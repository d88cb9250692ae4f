"""The bottom layer: what every other package may use and nothing in it depends on.

  errors        LlavaLnError (one line naming the file, record, flag or tensor) and run_command
  flags         parse_flags: dataclasses from argv, unknown flags refused
  atomic        atomic file and folder writes (a crash leaves the previous version intact)
  paths         whether a path from a file stays inside its folder; whether two folders overlap
  constants     IMAGE_TOKEN, IGNORE_INDEX, CONNECTOR_PREFIX, PEFT_PREFIX, DTYPES
  distributed   process groups for every launcher, and the few collectives we use
  processes     child processes in groups of their own, ended on every way out; temporary folders; free ports
  lazy          package attributes imported on first use (packages whose modules import torch)
  args          flags several commands share (--seed, --output_dir, --overwrite), each declared once
  benchmarks    the benchmarks scored: names, folders, answer kinds and lengths, scoring rules, headlines
"""
