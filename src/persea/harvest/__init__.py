"""Harvest: run every teacher over a prompt set into a resumable, compact on-disk cache."""

from persea.harvest.runner import HarvestResult, run_harvest

__all__ = ["HarvestResult", "run_harvest"]
