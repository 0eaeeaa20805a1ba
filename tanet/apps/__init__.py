"""Applications on top of models, data and engine: prediction, live streams, export,
visualisation, the demo.

Each module is one command's worth of behaviour; ``tanet.cli`` parses arguments and calls them.
"""
