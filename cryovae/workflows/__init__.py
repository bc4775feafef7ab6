"""Workflows: the pipelines that join the layers below (read -> preprocess -> train -> encode
-> write; the built-in demo). Commands call these; nothing below imports them."""

from cryovae.workflows.demo import DemoConfig, DemoResult, demo_config, run_demo
from cryovae.workflows.train import default_model_box, train_run, write_results

__all__ = ["DemoConfig", "DemoResult", "default_model_box", "demo_config", "run_demo", "train_run",
           "write_results"]
