"""agent_runner."""
