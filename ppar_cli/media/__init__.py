"""Video in and out: decoding through ffmpeg, encoding with each frame's timestamp, outputs that appear whole."""
