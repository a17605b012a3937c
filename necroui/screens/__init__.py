"""Screens of the necroui dashboard: main, task detail, graph, help and modals."""
