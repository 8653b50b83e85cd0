"""Models that own parameters: observation encoders, actor-critics, progress models."""

from densereward.models.networks import ActorCritic, make_encoder
from densereward.models.progress import ProgressModel

__all__ = ["ActorCritic", "ProgressModel", "make_encoder"]
