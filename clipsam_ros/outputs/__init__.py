"""What the node publishes, and the one builder of those messages."""
