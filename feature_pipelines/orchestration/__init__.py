"""Dagster at the edge: the factory turning feature views into assets, the IO manager, schedules."""
