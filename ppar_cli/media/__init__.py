"""Video in and out through FFmpeg's libraries (PyAV): probing, decoding at each frame's timestamp,
encoding, and outputs that appear whole."""
