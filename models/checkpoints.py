"""Saving and loading predictors: state dict + config, named as in the paper; published checkpoints included.

``saved_models/<name>_predictor.pt`` holds the state dict only (loaded with ``weights_only=True``);
``configs/<name>_config.json`` the training arguments. The published AutoBuild checkpoints pair a ``.pt`` with a
pickled argparse dict ``<name>_config.pkl``, read through the restricted unpickler, and name their modules
differently; ``convert_published_state`` maps them onto this toolkit's modules.
"""
from __future__ import annotations

import json
import os
import re

import torch

from iterators.caches import base_family
from iterators.safe_pickle import restricted_load
from iterators.targets import Target
from models.baselines import BaselinePredictor, build_baseline
from models.predictor import Predictor, build_predictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SUFFIX = "_predictor.pt"


def run_name(config: dict) -> str:
    """The paper's checkpoint name, e.g. ``ofa_mbv3_custom_acc_GATv2Conv_mean_directed_srcc1``."""
    name = "_".join([config["families"], config["format"], Target(config["target"]).file_tag(), config["gnn_type"],
                     config["aggr_method"], "directed", f"srcc{int(config['corr_lambda'])}"])
    return f"{config['tag']}_{name}" if config.get("tag") else name


def save_predictor(model: Predictor, config: dict, models_dir: str = "saved_models",
                   configs_dir: str = "configs") -> tuple[str, str]:
    os.makedirs(models_dir, exist_ok=True)
    os.makedirs(configs_dir, exist_ok=True)
    name = config["chkpt"]
    model_path = os.path.join(models_dir, name + _SUFFIX)
    config_path = os.path.join(configs_dir, name + "_config.json")
    torch.save(model.state_dict(), model_path + ".tmp")
    os.replace(model_path + ".tmp", model_path)
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return model_path, config_path


def find_config(chkpt_path: str) -> str:
    """``.../saved_models/X_predictor.pt`` -> ``configs/X_config.{json,pkl}`` or ``X_config.*`` beside it."""
    folder, base = os.path.split(os.path.abspath(chkpt_path))
    if not base.endswith(_SUFFIX):
        raise ValueError(f"{chkpt_path}: a predictor checkpoint is named <name>{_SUFFIX}")
    name = base[:-len(_SUFFIX)]
    dirs = [folder, os.path.join(os.path.dirname(folder), "configs"), os.path.join(os.getcwd(), "configs"),
            os.path.join(REPO, "configs")]
    candidates = [os.path.join(d, name + "_config" + ext) for d in dirs for ext in (".json", ".pkl")]
    for c in candidates:
        if os.path.exists(c):
            return c
    raise FileNotFoundError(f"no config for {chkpt_path}; looked for: {', '.join(dict.fromkeys(candidates))}")


def load_config(path: str) -> dict:
    if path.endswith(".json"):
        with open(path) as f:
            config = json.load(f)
    else:
        config = restricted_load(path)
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a pickled dict of training arguments")
    if "family" not in config:
        config["family"] = base_family(config["families"])
    return config


# published module name -> this toolkit's, applied as regex substitutions in order
_PUBLISHED_KEYS = [
    (r"^mlp_moments$", "target_moments"),
    (r"^embed_layer\.moment_tsr$", "unit_moments"),
    (r"^embed_layer\.stage_(embed|mlp)", r"fe_mlp.categories.stage.\1"),
    (r"^embed_layer\.block_(embed|mlp)", r"fe_mlp.categories.layer.\1"),
    (r"^embed_layer\.mbconv_(embed|mlp)", r"fe_mlp.categories.block_type.\1"),
    (r"^embed_layer\.exp_(embed|mlp)", r"fe_mlp.categories.expansion.\1"),
    (r"^embed_layer\.kernel_(embed|mlp)", r"fe_mlp.categories.kernel.\1"),
    (r"^fe_mlp\.categories\.(\w+)\.mlp", r"fe_mlp.categories.\1.lin"),
    (r"^embed_layer\.res_mlp", "fe_mlp.resolution"),
    (r"^encoder\.gnn_layers", "encoder.convs"),
    (r"^encoder\.bns\.(\d+)\.module", r"encoder.norms.\1"),
    (r"^post_proj", "head"),
]


def is_published_state(state: dict) -> bool:
    return "mlp_moments" in state


def convert_published_state(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith("encoder.init_ff") or key == "hop_srcc":
            continue  # defined but never used by the original forward pass
        for pattern, repl in _PUBLISHED_KEYS:
            key = re.sub(pattern, repl, key)
        out[key] = value
    # published test metrics are (MAE, MAPE, Spearman); Kendall's tau was not recorded
    out["test_metrics"] = torch.cat([state["test_metrics"].float(), torch.tensor([float("nan")])])
    return out


def load_predictor(chkpt_path: str, config_path: str | None = None
                   ) -> tuple[Predictor | BaselinePredictor, dict]:
    """Any predictor checkpoint of the toolkit (a GNN or a baseline of models/baselines.py), or a published one, in
    eval mode, with its config."""
    if not os.path.exists(chkpt_path):
        raise FileNotFoundError(f"no checkpoint at {chkpt_path}")
    config = load_config(config_path or find_config(chkpt_path))
    state = torch.load(chkpt_path, map_location="cpu", weights_only=True)
    if is_published_state(state):
        state = convert_published_state(state)
    model = build_baseline(config) if config.get("model", "gnn") != "gnn" else build_predictor(config)
    model.load_state_dict(state)
    return model.eval(), config
