"""The demo: the main job on the embedded default (see ``cli.py``)."""
