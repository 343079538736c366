"""Continual-learning strategies, one module per method; `bench.registry` finds them by name."""
