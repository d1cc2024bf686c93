"""A config file for `python -m dlresearch.main` that reads a config's dotted fields from JSON:
`--config=benchmarks/json_config.py:/path/to/fields.json` (used by `benchmarks.tuning_speed`)."""

import json

import ml_collections

from dlresearch import config as config_lib


def get_config(path: str) -> ml_collections.ConfigDict:
    with open(path) as f:
        return config_lib.apply_overrides(config_lib.base_config(), json.load(f))
