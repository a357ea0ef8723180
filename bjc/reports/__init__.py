"""Reports and metrics: the report directory, the execution state kept in it, job
results, the Prometheus metrics and the execution summaries read from disk.

Used by the engine and the web layer alike; imports neither.
"""
