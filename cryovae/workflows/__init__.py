"""Workflows: the pipelines that join the layers below (read -> preprocess -> train -> encode
-> write; the built-in demo). Commands call these; nothing below imports them."""

from cryovae.workflows.demo import DemoConfig, DemoResult, demo_config, run_demo
from cryovae.workflows.select import (
    Range,
    SelectionCriteria,
    SelectionResult,
    read_indices,
    select_run,
    selection_mask,
    write_selection,
)
from cryovae.workflows.train import default_model_box, train_run, write_results

__all__ = ["DemoConfig", "DemoResult", "Range", "SelectionCriteria", "SelectionResult", "default_model_box",
           "demo_config", "read_indices", "run_demo", "select_run", "selection_mask", "train_run", "write_results",
           "write_selection"]
