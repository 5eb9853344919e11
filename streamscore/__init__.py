"""streamscore: near-real-time ML scoring on Kafka."""

__version__ = "0.1.0"
