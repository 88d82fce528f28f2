"""The alert receiver's Prefect side: the dispatcher (spool -> flow runs, events) and the server entry point."""
