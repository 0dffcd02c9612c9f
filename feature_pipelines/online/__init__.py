"""Online store: Redis key layout, value encoding, atomic conditional publish, online reads."""
