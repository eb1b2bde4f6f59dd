"""Every Python suite shares tests/shared/ (the binary under test and how to run it, generated
stubs, the example workers as processes): it is put on `sys.path` here, once, so no suite reaches
into another's directory."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "shared"))
