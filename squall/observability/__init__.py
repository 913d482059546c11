"""Metrics, structured logs, lag, alarms and dashboards for every runner."""
