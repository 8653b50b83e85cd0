"""Producing step labels: Monte-Carlo rollouts from step prefixes, OmegaPRM's binary search."""
