"""Models in the loop, without Dagster: training on a feature service's frame, the artefact registry, scoring."""
