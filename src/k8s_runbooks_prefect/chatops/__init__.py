"""The Prefect side of chat approvals: the receiver reads and resumes paused runs through it."""
