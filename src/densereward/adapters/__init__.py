"""densereward inside the trainers people use: verl, TRL and OpenRLHF.

- ``text``: a recipe's signals and transforms on (prompt, response) text — the reward side every
  adapter shares.
- ``padded``: estimators on ``[batch, tokens]`` rewards and response masks, padded in and padded
  out (the layout of all three frameworks), with the conversion kept to one pass.
- ``verl``: the ``verl.plugins`` entry point that registers densereward's estimators in verl, and
  the reward manager that writes step rewards at step-end tokens.
- ``trl``: reward functions in TRL's ``reward_funcs`` form, a ``GRPOTrainer`` that trains on a
  recipe's per-token advantages, and process-reward-model training on stepwise supervision.
- ``server`` / ``openrlhf``: ``densereward serve`` (OpenRLHF's remote reward protocol over HTTP)
  and the ``reward_func`` file OpenRLHF loads locally.

Each framework is an optional extra; nothing here imports one until it is used.
"""
