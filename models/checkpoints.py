"""Saving and loading predictors: state dict + config, named as in the paper; published checkpoints included.

``saved_models/<name>_predictor.pt`` holds the state dict only (loaded with ``weights_only=True``);
``configs/<name>_config.json`` the training arguments. The published AutoBuild checkpoints pair a ``.pt`` with a
pickled argparse dict ``<name>_config.pkl``, read through the restricted unpickler, and name their modules
differently; ``convert_published_state`` maps them onto this toolkit's modules.

Whatever is wrong with a checkpoint or its config (missing, truncated, not a checkpoint, weights that do not fit the
config, a predictor of another family or target than the task needs) is a ``CheckpointError``: one line naming the
file and what to do. ``predictor_digest`` names a predictor by its content, so that stored predictions are never
mistaken for those of another predictor that happens to share its file name.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

import torch

from iterators.caches import base_family
from iterators.errors import UserError, reading
from iterators.paths import CONFIGS_DIR
from iterators.safe_pickle import load_tensors, restricted_load
from iterators.search_space import FAMILIES
from iterators.targets import Target
from models.baselines import BaselinePredictor, build_baseline
from models.predictor import Predictor, build_predictor

_SUFFIX = "_predictor.pt"
# the config keys that decide what a checkpoint's weights compute (with the state dict: the predictor's identity)
MODEL_KEYS = ("family", "format", "target", "gnn_type", "gnn_dim", "num_layers", "aggr_method", "gnn_activ",
              "reg_activ")
TRAIN_AGAIN = "train one with train_predictor.py"


class CheckpointError(UserError, ValueError):
    """A predictor checkpoint or config that cannot be used for the task at hand."""


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
        raise CheckpointError(f"{chkpt_path}: a predictor checkpoint is named <name>{_SUFFIX}")
    name = base[:-len(_SUFFIX)]
    dirs = [folder, os.path.join(os.path.dirname(folder), "configs"), os.path.join(os.getcwd(), "configs"),
            CONFIGS_DIR]
    candidates = [os.path.join(d, name + "_config" + ext) for d in dirs for ext in (".json", ".pkl")]
    for c in candidates:
        if os.path.exists(c):
            return c
    raise CheckpointError(f"no config for {chkpt_path}; looked for: {', '.join(dict.fromkeys(candidates))}; "
                          f"put the {name}_config.json written with it beside the checkpoint")


def load_config(path: str) -> dict:
    """A training config (.json of this toolkit, or the published pickled dict), with ``family`` filled in."""
    with reading(path, "predictor config", "use the _config.json written with the checkpoint"):
        if path.endswith(".json"):
            with open(path) as f:
                config = json.load(f)
        else:
            config = restricted_load(path)
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: expected a dict of training arguments, got a {type(config).__name__}")
        shape_keys = ("gnn_type", "gnn_dim", "num_layers", "aggr_method") if config.get("model", "gnn") == "gnn" else ()
        missing = [k for k in ("families", "target") + shape_keys if k not in config]
        if missing:
            raise CheckpointError(f"{path}: the config lacks {', '.join(missing)}; use the _config.json written "
                                  f"with the checkpoint")
        try:
            if "family" not in config:
                config["family"] = "+".join(base_family(f) for f in str(config["families"]).split("+"))
            Target(str(config["target"]))
        except UserError as err:
            raise CheckpointError(f"{path}: {err}") from None
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
    if not os.path.isfile(chkpt_path):
        raise CheckpointError(f"{chkpt_path}: no such checkpoint{' (a folder)' if os.path.isdir(chkpt_path) else ''}; "
                              f"give a <name>{_SUFFIX} written by train_predictor.py or a published one")
    config_path = config_path or find_config(chkpt_path)
    config = load_config(config_path)
    state = load_tensors(chkpt_path, "predictor checkpoint", f"give a <name>{_SUFFIX} written by train_predictor.py")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{chkpt_path}: not a predictor state dict; {TRAIN_AGAIN}")
    if is_published_state(state):
        state = convert_published_state(state)
    baseline = config.get("model", "gnn") != "gnn"
    try:
        model = build_baseline(config) if baseline else build_predictor(config)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        shape = (f"a {config.get('model')} baseline" if baseline else
                 f"{config.get('gnn_type')} dim {config.get('gnn_dim')}, {config.get('num_layers')} layers")
        raise CheckpointError(f"{chkpt_path}: the weights do not fit the config {config_path} (family "
                              f"{config.get('family')}, {shape}): {_first_line(err)}; keep each checkpoint with "
                              f"the config written beside it") from None
    return model.eval(), config


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])[:300] if text else type(err).__name__


def predictor_digest(model: Predictor, config: dict) -> str:
    """A short hash of what the predictor computes: its state dict and the config keys that shape the model.
    Two checkpoints with the same file name but other weights get other digests."""
    h = hashlib.sha256(json.dumps({k: config.get(k) for k in MODEL_KEYS}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def target_kind(config: dict) -> str:
    """"accuracy" when the target is a function of acc alone, "latency" of one latency_* metric alone, else
    "other" (e.g. acc/latency_gpu)."""
    names = Target(str(config["target"])).names
    if names == ["acc"]:
        return "accuracy"
    if len(names) == 1 and names[0].startswith("latency_"):
        return "latency"
    return "other"


def check_predictor(config: dict, chkpt: str, flag: str, family: str, kind: str) -> None:
    """Refuse a predictor that does not fit its use: ``family`` (one of FAMILIES), target ``kind`` ("accuracy" or
    "latency") and the sequence-graph (custom) format that OFA architectures are encoded in."""
    if config.get("family") != family:
        raise CheckpointError(f"{flag} {chkpt}: a predictor of {config.get('family')}; this needs one of {family} "
                              f"({FAMILIES[family].description})")
    if config.get("format", "custom") != "custom":
        raise CheckpointError(f"{flag} {chkpt}: a predictor of the {config.get('format')} format; this needs one of "
                              f"the custom (sequence-graph) format")
    if target_kind(config) != kind:
        raise CheckpointError(f"{flag} {chkpt}: predicts {config['target']!r}, not {kind}; give a predictor trained "
                              f"with -target {'acc' if kind == 'accuracy' else 'latency_<device>'}")
