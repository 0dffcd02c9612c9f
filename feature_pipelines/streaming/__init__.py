"""Streaming features: raw events on Redis Streams, validated by the raw rules, kept as exact tiles per entity."""
