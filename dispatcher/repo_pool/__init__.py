"""repo_pool."""
