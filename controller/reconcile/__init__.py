"""What every reconciler shares: ensuring owned objects, status writes, Events for findings, the work queue,
the referenced-Secret index and progress read from logs."""
