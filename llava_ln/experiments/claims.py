"""Judge the paper's claims C1-C9 from a comparison (llava-ln compare) and an analysis (llava-ln analyze).

    python -m llava_ln.experiments.claims --comparison OUT/comparison.json --analysis OUT/analysis.json

prints a markdown table: claim, the numbers it rests on, and a verdict. The rules are fixed here, so
a verdict can be recomputed by anyone from the two JSON files:

  margin M   scores are compared on the `average`; a difference counts only beyond M points,
             M = max(2, 2 x the root mean square of |average(X) - average(X_seed1)|) over every run X
             that has a replicate `X_seed1` (the same run with another seed: the noise of one run), else 2.
  a > b      reproduced when a - b > M, not reproduced when a - b < -M, else inconclusive.
  a >= b     reproduced when a - b >= -M (a is not clearly worse), else not reproduced.
  C3         exact counts; memory lower by more than 1 %.
  C6         layer similarity (all pairs) lower than full's by more than its noise: 2 standard errors
             over the samples, or 2 x |ln - ln_seed1| when the analysis has ln_seed1, whichever is larger.
  C7         the variance of the gradient norm (all groups) and its relative variance (var / mean^2), each
             against full's with the same kind of noise (2 x |ln - ln_seed1| when analysed): both lower:
             reproduced; both higher: not reproduced; otherwise inconclusive.
  C8         LN's spread of averages over its learning-rate runs (ln_lr_low, ln, ln_lr_high) against
             full's over the same factors (full_lr_low, full, full_lr_high): sensitive when larger by M;
             epochs: |average(ln_long) - average(ln)| > M (else inconclusive).
A claim whose runs are missing is "not run"; C9 needs a chat and a base backbone ("untested").
"""
import argparse

from llava_ln.core.bounded_json import read_json_object

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN = "reproduced", "not reproduced", "inconclusive", "not run"


def greater(a: float, b: float, margin: float) -> str:
    return REPRODUCED if a - b > margin else NOT_REPRODUCED if a - b < -margin else INCONCLUSIVE


def at_least(a: float, b: float, margin: float) -> str:
    return REPRODUCED if a - b >= -margin else NOT_REPRODUCED


def combine(verdicts: list) -> str:
    if any(v == NOT_RUN for v in verdicts):
        return NOT_RUN
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else INCONCLUSIVE


class Judge:
    def __init__(self, comparison: dict, analysis: dict | None):
        self.runs = comparison["modes"]
        self.analysis = analysis or {}
        self.replicates = {name[: -len("_seed1")]: abs(self._avg(name[: -len("_seed1")]) - self._avg(name))
                           for name in self.runs if name.endswith("_seed1")
                           and self._avg(name) is not None and self._avg(name[: -len("_seed1")]) is not None}
        pairs = list(self.replicates.values())
        self.noise = (sum(d * d for d in pairs) / len(pairs)) ** 0.5 if pairs else None
        self.margin = max(2.0, 2 * self.noise) if pairs else 2.0

    def _avg(self, name: str):
        run = self.runs.get(name)
        return None if run is None else run["average"]

    def _need(self, *names) -> bool:
        return all(self._avg(n) is not None for n in names)

    def _avgs(self, *names) -> str:
        return ", ".join(f"{n} {self._avg(n):.2f}" for n in names if self._avg(n) is not None)

    def c1(self):
        if not self._need("ln", "full", "lora"):
            return NOT_RUN, ""
        verdict = combine([at_least(self._avg("ln"), self._avg("full"), self.margin),
                           greater(self._avg("ln"), self._avg("lora"), self.margin)])
        return verdict, "average: " + self._avgs("ln", "full", "lora")

    def c2(self):
        if not self._need("ln_simple", "lora"):
            return NOT_RUN, ""
        return greater(self._avg("ln_simple"), self._avg("lora"), self.margin), "average: " + self._avgs("ln_simple",
                                                                                                        "lora")

    def c3(self):
        if not {"ln", "lora"} <= set(self.runs):
            return NOT_RUN, ""
        ln, lora = self.runs["ln"], self.runs["lora"]
        fewer = ln["trainable"] < lora["trainable"]
        memory = ln["peak_memory_gib"] < 0.99 * lora["peak_memory_gib"]
        text = (f"trainable ln {ln['trainable']:,} ({ln['trainable_pct']:.2f}%) vs lora {lora['trainable']:,} "
                f"({lora['trainable_pct']:.2f}%); peak memory ln {ln['peak_memory_gib']:.3f} vs lora "
                f"{lora['peak_memory_gib']:.3f} GiB")
        if "ln_simple" in self.runs:
            simple = self.runs["ln_simple"]
            text += (f"; ln_simple {simple['trainable']:,} ({simple['trainable_pct']:.3f}%), "
                     f"{simple['peak_memory_gib']:.3f} GiB")
        return combine([REPRODUCED if fewer else NOT_REPRODUCED, REPRODUCED if memory else NOT_REPRODUCED]), text

    def c4(self):
        if not self._need("conversation", "detail", "reasoning", "ln"):
            return NOT_RUN, ""
        conv, detail, reason, mix = (self._avg(n) for n in ("conversation", "detail", "reasoning", "ln"))
        verdict = combine([at_least(conv, mix, self.margin),  # conversation alone ~ the whole mix
                           at_least(conv, max(detail, reason), self.margin),  # the most efficient type
                           greater(min(conv, reason), detail, self.margin)])  # detail worst
        return verdict, "average: " + self._avgs("conversation", "detail", "reasoning") + f", whole mix (ln) {mix:.2f}"

    def c5(self):
        top = "ln_connector" if self._avg("ln_connector") is not None else "ln"
        if not self._need(top, "ln_simple", "connector"):
            return NOT_RUN, ""
        verdict = combine([greater(self._avg(top), self._avg("ln_simple"), self.margin),
                           greater(self._avg("ln_simple"), self._avg("connector"), self.margin)])
        return verdict, "average: " + self._avgs(top, "ln_simple", "connector")

    def c6(self):
        similarity = self.analysis.get("layer_similarity", {})
        if not {"ln", "full"} <= set(similarity):
            return NOT_RUN, ""
        ln, full = similarity["ln"], similarity["full"]
        noise = 2 * ((ln.get("all_pairs_se") or 0) ** 2 + (full.get("all_pairs_se") or 0) ** 2) ** 0.5
        seed = similarity.get("ln_seed1")
        if seed is not None:
            noise = max(noise, 2 * abs(ln["all_pairs"] - seed["all_pairs"]))
        verdict = greater(full["all_pairs"], ln["all_pairs"], noise)
        text = (f"all pairs ln {ln['all_pairs']:.4f} vs full {full['all_pairs']:.4f} (noise {noise:.4f}"
                + (f"; ln_seed1 {seed['all_pairs']:.4f}" if seed else "") + "); adjacent "
                f"{ln['adjacent']:.4f} vs {full['adjacent']:.4f}; image {_f(ln['image'])} vs {_f(full['image'])}; "
                f"text {_f(ln['text'])} vs {_f(full['text'])}")
        return verdict, text

    def c7(self):
        grads = self.analysis.get("grad_stats", {})
        if not (grads.get("ln") and grads.get("full")):
            return NOT_RUN, ""
        ln, full = grads["ln"]["all"], grads["full"]["all"]
        seed = (grads.get("ln_seed1") or {}).get("all")
        verdicts = []
        for key in ("mean_var", "mean_rel_var"):
            noise = 2 * abs(ln[key] - seed[key]) if seed else 0.0
            verdicts.append(greater(full[key], ln[key], noise))
        verdict = verdicts[0] if verdicts[0] == verdicts[1] else INCONCLUSIVE
        text = (f"window variance of the gradient norm ln {ln['mean_var']:.3g} vs full {full['mean_var']:.3g}; "
                f"relative variance {ln['mean_rel_var']:.3g} vs {full['mean_rel_var']:.3g}; mean norm "
                f"{ln['mean_norm']:.3g} vs {full['mean_norm']:.3g}")
        if seed:
            text += f" (ln_seed1: variance {seed['mean_var']:.3g}, relative {seed['mean_rel_var']:.3g})"
        norms_ln, norms_full = grads["ln"].get("norms_no_decay"), grads["full"].get("norms_no_decay")
        if norms_ln and norms_full:
            text += (f"; norm weights alone: variance {norms_ln['mean_var']:.3g} vs {norms_full['mean_var']:.3g}, "
                     f"relative {norms_ln['mean_rel_var']:.3g} vs {norms_full['mean_rel_var']:.3g}")
        return verdict, text

    def c8(self):
        if not self._need("ln", "ln_lr_low", "ln_lr_high"):
            return NOT_RUN, ""
        spread_ln = _spread([self._avg(n) for n in ("ln_lr_low", "ln", "ln_lr_high")])
        text = f"average: {self._avgs('ln_lr_low', 'ln', 'ln_lr_high')} (spread {spread_ln:.2f})"
        verdicts = []
        if self._need("full", "full_lr_low", "full_lr_high"):
            spread_full = _spread([self._avg(n) for n in ("full_lr_low", "full", "full_lr_high")])
            text += f"; {self._avgs('full_lr_low', 'full', 'full_lr_high')} (spread {spread_full:.2f})"
            verdicts.append(greater(spread_ln, spread_full, self.margin))
        else:
            verdicts.append(REPRODUCED if spread_ln > self.margin else INCONCLUSIVE)
        if self._need("ln_long"):
            change = self._avg("ln_long") - self._avg("ln")
            text += f"; twice the steps: ln_long {self._avg('ln_long'):.2f} ({change:+.2f})"
            verdicts.append(REPRODUCED if abs(change) > self.margin else INCONCLUSIVE)
        return combine(verdicts), text

    def c9(self):
        return "untested", "needs a base and a chat backbone; the toy world has one LLM (see docs/paper_claims.md)"

    def table(self) -> str:
        claims = [("C1", "LN >= full finetuning and > LoRA on average", self.c1),
                  ("C2", "LN-simple > LoRA on average", self.c2),
                  ("C3", "LN: fewer trainable parameters and less memory than LoRA", self.c3),
                  ("C4", "conversation data most efficient (~ whole mix); detail worst", self.c4),
                  ("C5", "LN+connector > LN-only > connector-only", self.c5),
                  ("C6", "LN: lower cross-layer similarity than full", self.c6),
                  ("C7", "LN: lower gradient variance than full", self.c7),
                  ("C8", "LN sensitive to learning rate and epochs", self.c8),
                  ("C9", "chat backbones benefit more than base ones", self.c9)]
        pairs = ", ".join(f"{name} {diff:.2f}" for name, diff in self.replicates.items()) or "not measured"
        lines = [f"Margin M = {self.margin:.2f} points of the average (seed-to-seed differences: {pairs}).", "",
                 "| claim | statement | measured | verdict |", "|---|---|---|---|"]
        for key, statement, judge in claims:
            verdict, text = judge()
            lines.append(f"| {key} | {statement} | {text} | {verdict} |")
        return "\n".join(lines) + "\n"


def _spread(values: list) -> float:
    return max(values) - min(values)


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparison", required=True, help="comparison.json of llava-ln compare")
    parser.add_argument("--analysis", help="analysis.json of llava-ln analyze")
    args = parser.parse_args(argv)
    comparison = read_json_object(args.comparison, "--comparison")
    analysis = read_json_object(args.analysis, "--analysis") if args.analysis else None
    print(Judge(comparison, analysis).table())
    return 0


if __name__ == "__main__":
    from llava_ln.core.errors import run_command

    raise SystemExit(run_command(main))
