"""Score every unit (module subgraph) of a predictor's search space: the ranking AutoBuild builds networks from.

    python label_units.py -chkpt saved_models/<name>_predictor.pt [-resolution 224]

Writes units/<name>_labeled_sgs.json (the family, the predictor's target and one {"unit", "config", "hops", "score"}
per unit), prints the 10 best and 10 worst units of every stage and saves a plot of the scores per stage.
"""
from __future__ import annotations

import os
import time

from iterators.errors import ArgumentParser, UserError, check_output_dir, run_cli
from iterators.runtime import add_threads_flag, configure
from iterators.search_space import describe, resolution_flag
from iterators.units import UnitCorpus


def plot_unit_scores(corpus: UnitCorpus, path: str) -> str:
    """Distribution of unit scores per position (one violin each)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = sorted({u["unit"] for u in corpus.units})
    scores = [[u["score"] for u in corpus.at(p)] for p in positions]
    fig, ax = plt.subplots(figsize=(1.6 * len(positions) + 2, 4))
    ax.violinplot(scores, showmedians=True)
    ax.set_xticks(range(1, len(positions) + 1), [f"unit {p}\n(n={len(s)})" for p, s in zip(positions, scores)])
    ax.set(ylabel=f"unit score ({corpus.target} scale)", title="unit scores per stage")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> str:
    p = ArgumentParser(__doc__)
    p.add_argument("-chkpt", required=True, help="<name>_predictor.pt (the toolkit's or a published one)")
    p.add_argument("-resolution", type=resolution_flag, default=224)
    p.add_argument("-out_dir", default="units")
    p.add_argument("-top", type=int, default=10, help="units listed per stage, best and worst")
    p.add_argument("-quiet", action="store_true")
    add_threads_flag(p)
    args = p.parse_args(argv)
    configure(args.threads)
    check_output_dir(args.out_dir, "-out_dir")
    from models.checkpoints import load_predictor  # after the flags: --help answers at once
    from models.unit_scores import score_units
    model, config = load_predictor(args.chkpt)
    if config.get("format", "custom") != "custom":
        raise UserError(f"-chkpt {args.chkpt}: units are scored with a predictor of the custom (sequence-graph) "
                        f"format, this one is {config['format']}")
    start = time.perf_counter()
    units = score_units(model, config["family"], args.resolution, config.get("norm", 1), progress=not args.quiet)
    seconds = time.perf_counter() - start
    corpus = UnitCorpus(config["family"], units, config["target"], os.path.basename(args.chkpt))
    print(f"scored {len(units)} units of {corpus.family} at resolution {args.resolution} in {seconds:.2f}s "
          f"(target {corpus.target!r})")

    for position in sorted({u["unit"] for u in units}):
        ranked = sorted(corpus.at(position), key=lambda u: u["score"], reverse=True)
        print(f"\nunit {position}: {len(ranked)} units, best {args.top} / worst {args.top}")
        for label, rows in (("best", ranked[:args.top]), ("worst", ranked[-args.top:])):
            for u in rows:
                print(f"  {label:<5} {u['score']:>12.5g}  {describe(u['config'])}")

    os.makedirs(args.out_dir, exist_ok=True)
    name = os.path.basename(args.chkpt)[:-len("_predictor.pt")]
    out = corpus.save(os.path.join(args.out_dir, f"{name}_labeled_sgs.json"))
    plot = plot_unit_scores(corpus, os.path.join(args.out_dir, f"{name}_unit_scores.png"))
    print(f"\nwrote {out} and {plot}")
    return out


if __name__ == "__main__":
    run_cli(main)
