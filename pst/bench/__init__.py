"""Benchmarks shipped with pst: ``pst bench <name>`` runs ``pst.bench.<name>.main``."""
