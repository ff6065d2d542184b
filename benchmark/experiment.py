"""The pieces every sanity check shares, under the names earlier code imports them by.

Validation lives in ``benchmark.plan`` (``benchmark.validation``, ``benchmark.resolve``), the inputs in
``benchmark.inputs``, stage scoring in ``benchmark.scoring``, the
scheduling of stages in ``benchmark.schedule`` and a run's lifecycle in ``benchmark.lifecycle``.
"""

from benchmark.lifecycle import RUN_FILES, base_meta, finish_table, run_guarded, write_outputs
from benchmark.inputs import Setup, cache_dir, preprocessing, select_images, setup
from benchmark.plan import Plan, validate
from benchmark.resolve import resolve_methods
from benchmark.schedule import JOINT_STAGES, score_stages
from benchmark.scoring import SavedMaps, Scored, logit_change, process

__all__ = ["RUN_FILES", "JOINT_STAGES", "Plan", "SavedMaps", "Scored", "Setup", "base_meta", "cache_dir",
           "finish_table", "logit_change", "preprocessing", "process", "resolve_methods", "run_guarded",
           "score_stages", "select_images", "setup", "validate", "write_outputs"]
