"""Support shared by the test suite and the benchmarks (as ``torch.testing`` / ``numpy.testing``):
media files, the real-world file shapes and their ground-truth decode (:mod:`.media`), the
seeded tiny checkpoint (:mod:`.tiny`), a real ``tanet serve`` subprocess and client
(:mod:`.serve`), a paced live stream server (:mod:`.live_server`), published checkpoint layouts
(:mod:`.published`), the transfer set-up (:mod:`.transfer`) and side-by-side timing
(:mod:`.timing`).

The library itself never imports this package (``tests/test_packaging.py`` checks it)."""
