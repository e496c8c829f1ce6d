"""Tooling: the `rasa-meta` command line, evaluation, benchmarks and data reports."""
