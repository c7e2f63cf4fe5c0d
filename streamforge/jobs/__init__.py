"""The worker side: the Huey queue and its tasks, processing runs, intake, notifications, heartbeats."""
