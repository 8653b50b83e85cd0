"""Environments to learn and prove things on. ``control``: Gymnasium and MiniGrid."""
