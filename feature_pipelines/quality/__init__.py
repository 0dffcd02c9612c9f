"""Quality gates: Great Expectations suites derived from feature views, raw-data rules, check outcomes."""
