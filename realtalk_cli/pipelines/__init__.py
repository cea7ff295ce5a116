"""Inference pipelines: networks + I/O glue for each job."""
