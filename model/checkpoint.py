"""Training checkpoints on disk: one folder per save, ``<run_dir>/checkpoint_<step>/``.

Each folder holds ``state.pt`` (``torch.save`` of plain dicts and tensors, loadable with
``weights_only=True``) and ``meta.json`` (stage, step, preset, encoders: readable without torch).
``state.pt`` keys:

==============  ============================================================================
``weights``     ``{"dit"?, "estimator"?, "va_encoder"?: state_dict}``: every network the stage built
``dit_from``    prior stage only: the checkpoint folder its (untouched) DiT weights come from, so a
                paper-sized prior checkpoint does not copy 3B frozen parameters; may be None
``ema``         ``EMA.state_dict()`` of the trained parameters (names as in the stage's objective)
``optimizer``   AdamW state; ``step``, ``epoch``, ``batch_index`` (data position: batches of
                ``epoch`` already consumed); ``config`` (``TrainConfig`` as a dict)
==============  ============================================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE, META_FILE = "state.pt", "meta.json"
PREFIX = "checkpoint_"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def save_checkpoint(folder: str | os.PathLike, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / STATE_FILE)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return folder


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(folder) / META_FILE).read_text())


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run (state and meta both written), by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.glob(f"{PREFIX}*") if (p / STATE_FILE).is_file() and (p / META_FILE).is_file()]
    return sorted(found, key=lambda p: read_meta(p)["step"])


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder (its latest checkpoint)."""
    path = Path(path).resolve()
    if (path / STATE_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(f"{path} is neither a checkpoint folder nor a run folder with checkpoints")
    return latest


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(resolve_checkpoint(path) / STATE_FILE, map_location=map_location, weights_only=True)


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``{"dit"?, "estimator"?, "va_encoder"?, "stage", "config", "ema"}`` of a checkpoint; a prior
    checkpoint's DiT is read from its ``dit_from`` link. With ``ema``, trained weights may be swapped
    for their averages by the caller."""
    folder = resolve_checkpoint(path)
    state = load_state(folder, map_location)
    weights = dict(state["weights"])
    if "dit" not in weights and state.get("dit_from"):
        linked = load_weights(state["dit_from"], map_location)
        if "dit" in linked:
            weights["dit"] = linked["dit"]
            weights["dit_ema"] = linked.get("dit_ema")
    stage_ema = state.get("ema", {}).get("shadow", {})
    for name in ("dit", "estimator", "va_encoder"):
        averaged = {k[len(name) + 1 :]: v for k, v in stage_ema.items() if k.startswith(name + ".")}
        if averaged:
            weights[f"{name}_ema"] = averaged
    return {**weights, "stage": state["config"]["stage"], "config": state["config"], "path": str(folder)}
