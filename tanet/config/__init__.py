"""Run configuration: dataclasses, a YAML file, and ``--set a.b=v`` overrides.

One :class:`Config` holds everything ``tanet train`` / ``tanet test`` need. A YAML recipe sets
any subset of its keys; ``--set`` overrides them one at a time, parsed as YAML scalars and
checked against the field's type. An unknown key is an error naming the file and the closest
known key::

    configs/x.yaml: unknown key 'train.epoch'; did you mean 'train.epochs'?
"""
from tanet.config.loading import (_hints, all_keys, apply_overrides, config_from_dict,
                                  config_to_dict, dump_config, find_config, list_recipes,
                                  load_config)
from tanet.config.schema import (Config, ConfigError, DataConfig, ModelConfig, TamConfig,
                                 TestConfig, TrainConfig)

__all__ = ["Config", "ModelConfig", "DataConfig", "TrainConfig", "TestConfig", "ConfigError",
           "load_config", "find_config", "list_recipes", "apply_overrides", "config_to_dict",
           "config_from_dict", "dump_config", "TamConfig", "all_keys", "_hints"]
