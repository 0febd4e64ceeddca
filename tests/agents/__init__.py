"""End-to-end flows through the demo network: bridge → portal → … → account/filesystem/scheduler."""
