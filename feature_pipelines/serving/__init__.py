"""The HTTP feature server and its request log."""
