"""Benchmark answer generation (`llava-ln eval`): read an official layout, generate in batches, write official files.

One module per job:
  items          EvalItem: one question (or captioning request) with its image and prompt
  prompts        LLaVA-1.5's answer-format suffixes and the caption prompt
  layout         shared helpers for finding files in a benchmark's official layout
  mme, vqav2, pope, captions   per benchmark: read the official question layout, write the official outputs
  registry       benchmark name -> its reader/writer and default prompt
  model_loading  load any checkpoint (run folder, merged, exported) with its template and image pipeline
  prompting      question -> input ids, tokenized exactly as training tokenizes
  generator      batched generation: left padding, attention mask, greedy by default
  answer_store   restartable append-only JSONL answers (one file per rank), robust to a torn last line
  distributed    rank split and in-process gathering over torch.distributed (gloo)
  runner         the whole `llava-ln eval` run
Scoring lives in llava_ln.scoring; the files written here are exactly what it reads.
"""
