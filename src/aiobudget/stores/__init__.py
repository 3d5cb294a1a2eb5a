"""Stores: where budgets' counters live (`MemoryStore`, `RedisStore`)."""
