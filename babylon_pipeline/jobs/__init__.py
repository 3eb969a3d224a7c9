"""Asset jobs and schedules."""
