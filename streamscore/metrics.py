"""Every Prometheus metric of streamscore, defined once.

Names follow ``streamscore_<component>_<what>_<unit>``. Components import what they update from
here; nothing else creates metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))

BUILD = Info("streamscore_build", "Version of the running streamscore process.")

# --- shared ---------------------------------------------------------------------------------
DLQ_RECORDS = Counter(
    "streamscore_dlq_records_total", "Records sent to the dead-letter topic.", ["source", "stage"]
)
TRANSIENT_ERRORS = Counter(
    "streamscore_transient_errors_total",
    "Transient infrastructure errors retried with backoff.",
    ["component", "kind"],
)
READY = Gauge("streamscore_process_ready", "1 when the process reports ready.", ["component"])
LAST_COMMIT = Gauge(
    "streamscore_consumer_last_commit_timestamp_seconds",
    "Unix time of the last offset commit (or of the last progress) of a stage.",
    ["component"],
)
CONSUMER_LAG_MESSAGES = Gauge(
    "streamscore_consumer_lag_messages",
    "Log-end offset minus committed offset.",
    ["group", "topic", "partition"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "streamscore_consumer_lag_seconds",
    "Age of the oldest unconsumed record (0 when caught up).",
    ["group", "topic", "partition"],
)
LAG_COLLECT_SECONDS = Gauge(
    "streamscore_exporter_collect_duration_seconds", "Time the last lag measurement took."
)
LAG_COLLECT_ERRORS = Counter(
    "streamscore_exporter_collect_errors_total", "Lag measurements that failed (broker unreachable)."
)
LAG_LAST_SUCCESS = Gauge(
    "streamscore_exporter_last_success_timestamp_seconds", "Unix time of the last lag measurement."
)

# --- poller ---------------------------------------------------------------------------------
POLLER_REQUESTS = Counter(
    "streamscore_poller_requests_total", "HTTP requests by status.", ["source", "status"]
)
POLLER_RETRIES = Counter("streamscore_poller_retries_total", "HTTP retries by reason.", ["source", "reason"])
POLLER_FAILURES = Counter(
    "streamscore_poller_failures_total",
    "Pages given up after the bounded attempts.",
    ["source", "reason"],
)
POLLER_THROTTLED = Counter(
    "streamscore_poller_throttled_seconds_total",
    "Seconds spent waiting on Retry-After or the client rate limit.",
    ["source", "cause"],
)
POLLER_FETCHED = Counter(
    "streamscore_poller_records_fetched_total", "Records received from the API.", ["source"]
)
POLLER_PRODUCED = Counter(
    "streamscore_poller_records_produced_total", "Records acknowledged by Kafka.", ["source"]
)
POLLER_PAGE_LATENCY = Histogram(
    "streamscore_poller_page_latency_seconds",
    "Time to fetch one page.",
    ["source"],
    buckets=LATENCY_BUCKETS,
)
POLLER_CURSOR_LAG = Gauge(
    "streamscore_poller_cursor_lag_seconds",
    "Now minus the time of the newest record fetched.",
    ["source"],
)

# --- processor ------------------------------------------------------------------------------
PROCESSOR_IN = Counter(
    "streamscore_processor_records_in_total", "Records read by an agent.", ["agent", "source"]
)
PROCESSOR_OUT = Counter(
    "streamscore_processor_records_out_total", "Records produced by an agent.", ["agent", "source"]
)
PROCESSOR_BATCH = Histogram(
    "streamscore_processor_batch_size_records",
    "Records per micro-batch.",
    ["agent"],
    buckets=BATCH_BUCKETS,
)
PROCESSOR_STAGE_LATENCY = Histogram(
    "streamscore_processor_stage_latency_seconds",
    "Time from fetch to the agent's output.",
    ["agent"],
    buckets=E2E_BUCKETS,
)
INFERENCE_LATENCY = Histogram(
    "streamscore_processor_inference_latency_seconds",
    "One ONNX run over a batch.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
SCORES = Histogram(
    "streamscore_processor_score_ratio",
    "Distribution of model scores.",
    ["model", "version", "variant"],
    buckets=SCORE_BUCKETS,
)
PREDICTIONS = Counter(
    "streamscore_processor_predictions_total",
    "Predictions by label.",
    ["model", "version", "variant", "label"],
)
ANOMALIES = Counter(
    "streamscore_processor_anomalies_total",
    "Predictions flagged as anomalies.",
    ["model", "version", "variant"],
)
LOW_CONFIDENCE = Counter(
    "streamscore_processor_low_confidence_total",
    "Predictions in the low-confidence band.",
    ["model", "version", "variant"],
)

# --- sink -----------------------------------------------------------------------------------
SINK_WRITTEN = Counter(
    "streamscore_sink_documents_written_total", "Documents acknowledged by MongoDB.", ["source"]
)
SINK_WRITE_LATENCY = Histogram(
    "streamscore_sink_write_latency_seconds",
    "One bulk write to MongoDB.",
    buckets=LATENCY_BUCKETS,
)
SINK_WRITE_ERRORS = Counter("streamscore_sink_write_errors_total", "Failed bulk writes by kind.", ["kind"])
END_TO_END = Histogram(
    "streamscore_pipeline_end_to_end_latency_seconds",
    "From fetch to MongoDB acknowledgement.",
    ["source"],
    buckets=E2E_BUCKETS,
)
