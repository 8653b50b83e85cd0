"""Signals: where step rewards come from. Each writes named columns onto a ``Trajectories`` batch.

A signal is a registered frozen dataclass subclassing ``densereward.core.components.Signal``: its
fields are its parameters, ``needs()`` says what it asks of its context, and ``bind(context)``
returns the ready callable ``(batch, name) -> batch`` (models looked up, fitted on demonstrations,
counters started). Every module of this package is imported here, so a new signal registers by
being written.
"""

from densereward.core.components import SignalContext
from densereward.core.registry import import_submodules
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

import_submodules(__name__)

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
