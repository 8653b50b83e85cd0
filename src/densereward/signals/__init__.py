"""Signals: where step rewards come from. Each writes named columns onto a ``Trajectories`` batch.

A signal is a registered dataclass component with ``__call__(batch, name) -> batch``; those that
learn before use (a progress model from demonstrations) also have ``prepare(context)``.
"""

from densereward.signals.base import SignalContext
from densereward.signals.control import CountBonus, ProgressPotential
from densereward.signals.decomposition import ReturnDecompositionSignal
from densereward.signals.feedback import AIFeedback, OpenAIAnnotator, RuleAnnotator
from densereward.signals.functions import RewardFunctionSignal, load_function
from densereward.signals.reasoning import (
    AnswerLikelihoodSignal,
    ImplicitPRMSignal,
    InformationGainSignal,
    PRMSignal,
    ProgressSignal,
)

__all__ = [
    "AIFeedback",
    "AnswerLikelihoodSignal",
    "CountBonus",
    "ImplicitPRMSignal",
    "InformationGainSignal",
    "OpenAIAnnotator",
    "PRMSignal",
    "ProgressPotential",
    "ProgressSignal",
    "ReturnDecompositionSignal",
    "RewardFunctionSignal",
    "RuleAnnotator",
    "SignalContext",
    "load_function",
]
