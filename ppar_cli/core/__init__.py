"""The network and how clips meet it: the dual-CLS tubelet transformer, clip geometry, weights files, scoring."""
