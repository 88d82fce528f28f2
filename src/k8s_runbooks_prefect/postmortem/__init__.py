"""Post-mortems read from Prefect: the run, its subflow runs, their states and artifacts."""
