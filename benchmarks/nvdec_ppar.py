"""`ppar` with its frame decoder on NVDEC, for gpu.py's end-to-end runs only: what decoding on the
GPU would save a run before ppar decodes there itself (README, "On a GPU").

    python benchmarks/nvdec_ppar.py anonymize IN OUT --device cuda ...   # the arguments of `ppar`

PyAV opens the video to decode with hwaccel CUDA and no software fallback; its frames come back to
memory as NV12, which ppar's 4:2:0 path converts to I420 as it does any other layout. Probing and
the audio's remux open the file as before. The patch is made at import, outside the main guard, so
`--workers`' spawned processes, which import this file again, decode on NVDEC too.
"""
import sys

import av
from av.codec.hwaccel import HWAccel

_open = av.open


def _open_on_nvdec(file, *args, **kwargs):
    if sys._getframe(1).f_code.co_filename.endswith("decode.py"):  # ppar_cli.media.decode's frame reader
        kwargs.setdefault("hwaccel", HWAccel(device_type="cuda", allow_software_fallback=False))
    return _open(file, *args, **kwargs)


av.open = _open_on_nvdec

if __name__ == "__main__":
    from ppar_cli.cli import main

    main()
