"""Analyst tools that read topics without disturbing the pipeline: replay, tail (and the
readers ``streams.rescore`` builds on).

Every reader here is a throwaway consumer (``kafka_config.reader_config``): manual ``assign()``,
a random group id, never a commit, so no pipeline group's offsets or membership change.
"""
