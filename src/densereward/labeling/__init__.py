"""Producing step labels: Monte-Carlo rollouts from step prefixes, OmegaPRM's binary search
(``mc``), and labeling jobs that resume after any kill, in this process or on Ray (``jobs``)."""
