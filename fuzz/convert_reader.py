"""What fuzz/convert_msgpack.py and fuzz/convert_torch.py share: an atheris
harness for dev/convert_hf.py's reader of one released layout. `to-bigs` and
`inspect` on any file must either convert it or exit 1 with a message (a
ConvertError); any other exception is a bug, which atheris reports with the
input that raised it."""
import atexit
import contextlib
import io
import os
import shutil
import sys
import tempfile

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dev"))
with atheris.instrument_imports(include=["convert_hf"]):
    import convert_hf  # noqa: E402


def run(fmt, name):
    """Fuzzes `convert_hf.py to-bigs --format FMT` on a file called NAME."""
    work = tempfile.mkdtemp(prefix="bigs_fuzz_%s_" % fmt)
    atexit.register(shutil.rmtree, work, True)
    model, out = os.path.join(work, name), os.path.join(work, "model.bin")

    def test_one_input(data):
        with open(model, "wb") as f:
            f.write(data)
        for argv in (["to-bigs", "--model", model, "--out", out, "--format", fmt], ["inspect", model, "--format", fmt]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                rc = convert_hf.main(argv)
            assert rc in (0, 1, None), rc

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
