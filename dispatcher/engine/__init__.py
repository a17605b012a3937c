"""The engine's components (see DispatcherCore in :mod:`..core` for the facade)."""
