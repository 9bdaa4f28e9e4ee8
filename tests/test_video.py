"""The decoder's buffer reuse: a chunk still in use anywhere is never overwritten by the next one."""
from __future__ import annotations

import numpy as np
import torch
from helpers import make_clip

from ppar_cli.media.decode import BufferPool, FrameReader
from ppar_cli.media.probe import probe


def test_pool_never_hands_out_a_buffer_in_use():
    pool = BufferPool(120)
    a = pool.get()
    view = a[:60].reshape(2, 10, 3)  # what the decoder yields
    del a
    b = pool.get()
    assert b is not view.base  # a view keeps its buffer busy
    data = np.ascontiguousarray(view).data  # what waits in the encoder's queue
    del view
    c = pool.get()
    assert c is not data.obj.base and c is not b
    tensor = torch.from_numpy(c[:30].reshape(10, 3))  # what the model reads
    del c
    d = pool.get()
    assert d is not tensor.numpy().base
    busy = {id(data.obj.base), id(tensor.numpy().base)}
    del data, tensor, d
    assert id(pool.get()) in busy  # released buffers come back
    assert len(pool._bufs) == 4


def test_pool_keeps_at_most_its_cap():
    pool = BufferPool(8, keep=2)
    held = [pool.get() for _ in range(5)]
    assert len({id(h) for h in held}) == 5 and len(pool._bufs) == 2


def test_ffmpeg_chunks_held_by_the_consumer_stay_intact(tmp_path):
    # Hold every chunk: each must still show its own frames after the decoder moved on.
    path = make_clip(tmp_path / "c.mp4", 64, 48, 70, audio=False)
    held = list(FrameReader(probe(path), backend="ffmpeg").chunks(8))
    assert [len(c) for c in held] == [8] * 8 + [6]
    assert len({id(c.base) for c in held}) == len(held)
    streamed, buffers = [], set()  # the same frames, consumed and dropped one chunk at a time
    for chunk in FrameReader(probe(path), backend="ffmpeg").chunks(8):
        streamed.append(chunk.copy())
        buffers.add(id(chunk.base))
    assert len(buffers) <= 3  # reused
    np.testing.assert_array_equal(np.concatenate(held), np.concatenate(streamed))
    assert len({c.tobytes() for c in held}) == len(held)  # the pattern moves: a reused buffer would show
