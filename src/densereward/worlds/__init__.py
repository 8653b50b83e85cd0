"""Worlds to learn and prove things on, one package each, each registering a ``World``
(``densereward.core.components``): ``control`` (Gymnasium/MiniGrid, PPO), ``reasoning``
(step-verifiable tasks, small causal LMs, GRPO). Every module of every world package is imported
here, so a new world is one new package: nothing outside it names it.
"""

from densereward.core.registry import import_submodules

import_submodules(__name__, recursive=True)
