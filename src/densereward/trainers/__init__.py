"""Small, readable trainers that consume a reward pipeline (signals -> transforms -> estimator)."""

from densereward.trainers.ppo import PPOConfig, train_ppo

__all__ = ["PPOConfig", "train_ppo"]
