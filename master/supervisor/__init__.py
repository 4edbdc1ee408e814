"""The production master: arbiter, lifecycle decisions, rolling restarts, watchdog, config, control, metrics."""
