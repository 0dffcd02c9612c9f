"""The stream consumer's defaults, importable without its dependencies (the raw rules and Great
Expectations cost seconds to import, which every CLI verb would pay)."""

DEFAULT_GROUP = "feature-pipelines"
# Entries read per batch: the raw rules cost ~20-30 ms a batch whatever its size, so a burst is
# judged 2,000 at a time; at a low rate a batch is whatever has arrived (no wait for it to fill).
DEFAULT_BATCH_SIZE = 2000
