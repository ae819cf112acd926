"""pytest fixtures for testing code against a bacalhau network (registered via pytest11)."""
