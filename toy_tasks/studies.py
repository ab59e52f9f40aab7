"""Presets of `python -m toy_tasks experiment` that are not a methods-by-steps table: name -> Study (its
run, table, plot and summary; toy_tasks.redi_epochs.Study)."""
from __future__ import annotations

from toy_tasks import redi_epochs

STUDIES = {"redi-epochs": redi_epochs.STUDY}
