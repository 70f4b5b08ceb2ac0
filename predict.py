"""Predict a target for architectures with any predictor checkpoint of the toolkit or a published one.

    python predict.py -chkpt saved_models/X_predictor.pt -archs archs.json [-out predictions.json]

archs.json is a JSON list of {"resolution": 224, "config": [[block strings of stage 1], ...]}. Predictions are in
the target's own units, one per architecture, in order; printed as JSON when -out is absent.
"""
from __future__ import annotations

import argparse
import json
import sys

from iterators.search_space import ArchError, arch_from_json
from models.checkpoints import load_predictor
from models.predictor import predict_archs


def main(argv=None) -> list[float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-chkpt", required=True, help="<name>_predictor.pt; its config is found by the paper's naming")
    p.add_argument("-archs", required=True, help="JSON list of {resolution, config}")
    p.add_argument("-out", default=None, help="write the predictions here instead of stdout")
    args = p.parse_args(argv)
    model, config = load_predictor(args.chkpt)
    with open(args.archs) as f:
        entries = json.load(f)
    if not isinstance(entries, list):
        p.error(f"{args.archs}: expected a JSON list of architectures")
    archs = []
    for i, entry in enumerate(entries):
        try:
            archs.append(arch_from_json(entry, config["family"]))
        except ArchError as err:
            p.error(f"{args.archs}: architecture {i}: {err}")
    preds = predict_archs(model, archs)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(preds, f)
        print(f"wrote {len(preds)} predictions of {config['target']} to {args.out}", file=sys.stderr)
    else:
        json.dump(preds, sys.stdout)
        print()
    return preds


if __name__ == "__main__":
    main()
