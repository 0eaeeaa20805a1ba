"""Training and evaluation: ``train(cfg)`` and ``test(checkpoint, cfg)`` (what ``tanet train`` /
``tanet test`` call), with exact resume and DistributedDataParallel.

Modules: :mod:`.train` (the training story), :mod:`.evaluate` (``evaluate``, ``test``),
:mod:`.build` (datasets, model, optimiser, schedule from a config), :mod:`.checkpointing` (state
files, resume), :mod:`.distributed` (processes, samplers), :mod:`.samplers` (class-balanced and
square-root sampling), :mod:`.losses` (``train.loss``, class weights), :mod:`.reports`
(per-class tables and plots), :mod:`.seeding` (RNG states), :mod:`.signals` (interrupts,
non-finite losses).
"""
from tanet.engine.build import build_model, build_optimizer, lr_factor
from tanet.engine.checkpointing import load_train_state, read_metrics, save_checkpoint
from tanet.engine.distributed import (
                                      DistInfo,
                                      ShardSampler,
                                      TrainSampler,
                                      finish_distributed,
                                      init_distributed,
)
from tanet.engine.evaluate import EvalResult, evaluate, test
from tanet.engine.seeding import rng_state, set_rng_state
from tanet.engine.signals import NonFiniteLossError, TrainingInterrupted
from tanet.engine.state import RunningStats
from tanet.engine.train import train

__all__ = ["train", "test", "evaluate", "EvalResult", "DistInfo", "init_distributed",
           "finish_distributed", "lr_factor", "build_model", "build_optimizer", "TrainSampler",
           "ShardSampler", "save_checkpoint", "load_train_state", "read_metrics",
           "TrainingInterrupted", "NonFiniteLossError", "RunningStats", "rng_state",
           "set_rng_state"]
