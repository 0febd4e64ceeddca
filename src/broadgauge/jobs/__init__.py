"""Jobs, boards and the agent runtime (templemeads)."""
