"""The engine's components, driven by one thread (:mod:`.engine`) behind DispatcherCore.

Each module owns one piece of state behind a small typed interface: :mod:`.taskbook` (tasks),
:mod:`.admission` (what may start), :mod:`.launch_plane` (assignments and launches),
:mod:`.runner_table` (live runners and their verdicts), :mod:`.fencer` (confirmed stops),
:mod:`.settler` (how runs end; retries), :mod:`.reconciler` (restart plans), :mod:`.publisher`
(snapshots). :mod:`.commands` is what other threads may send.
"""
