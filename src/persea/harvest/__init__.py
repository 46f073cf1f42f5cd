"""Harvest: run every teacher over a prompt set into a resumable, compact on-disk cache."""

from persea.harvest.runner import HarvestJob, HarvestResult, run_harvest

__all__ = ["HarvestJob", "HarvestResult", "run_harvest"]
