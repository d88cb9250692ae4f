"""The embedded toy world: coloured-shape scenes, LLaVA-format data, benchmark-format eval sets, tiny backbones.

Entry points: `llava-ln toy --out DIR --seed N` (generate.write_toy_world) and
`python -m llava_ln.toy.pretrain` (rebuild the committed backbones in assets/).
"""
