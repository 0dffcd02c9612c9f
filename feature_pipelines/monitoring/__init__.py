"""Monitoring without Dagster: skew, drift, shadow definitions, their tables, reports and plots, injected faults."""
