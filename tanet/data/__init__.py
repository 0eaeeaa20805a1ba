"""Video data pipeline: decoding, annotations, sampling, transforms, datasets (never imports models).

Modules (import them directly; this package imports nothing so that ``import tanet`` stays cheap):

* :mod:`tanet.data.decode`: ``open_video``, ``read_frames``, ``VideoDecodeError`` (reading videos;
  with its frame index (:mod:`~tanet.data.frame_index`, :mod:`~tanet.data.index_cache`, seek
  points verified by :mod:`~tanet.data.verify`), the frame conversion of
  :mod:`~tanet.data.convert`, :mod:`tanet.data.encode`, :mod:`tanet.data.variants` and
  :mod:`tanet.data.stream`, the only modules that import PyAV).
* :mod:`tanet.data.inputs`: what a reader opens (a file, a URL by range requests through
  :mod:`tanet.remote`, a ``MemoryVideo``: a shard's bytes) and the key its index is cached
  under; :mod:`tanet.data.video_types` (the reader's errors and facts) and
  :mod:`tanet.data.frame_folder` (``FrameFolder``), both re-exported by ``decode``.
* :mod:`tanet.data.shards`: WebDataset shards (``open_shards``, the manifest, records by byte
  offset, ``StreamPlan``: the order of an epoch and its guarantees);
  :mod:`tanet.data.streaming`: ``ShardStream`` (training and evaluation streamed from them).
* :mod:`tanet.data.encode`: ``write_video`` (tests, the synthetic benchmark).
* :mod:`tanet.data.variants`: real-world file shapes (DivX/Xvid packed B-frames, open GOPs,
  pts = dts, truncation).
* :mod:`tanet.data.sampling`: ``segment_indices``, ``uniform_clips_indices``, ``dense_indices``.
* :mod:`tanet.data.sources`: ``resolve_videos`` (which videos a folder, list, split folder or
  ``-`` names; the one rule for relative paths), ``Source``, ``Video``, ``find_videos``.
* :mod:`tanet.data.annotations`: ``read_annotations``, ``Record``, class-name files.
* :mod:`tanet.data.transforms`: ``build_train_transform``, ``build_test_transform`` and the pure
  functions behind them.
* :mod:`tanet.data.dataset`: ``VideoDataset``, ``collate``, ``build_loader``.
* :mod:`tanet.data.synthetic`: ``generate`` (the forward/backward temporal benchmark).
* :mod:`tanet.data.stream`: ``LiveStream`` (live sources: URLs, pipes, capture devices).
"""
