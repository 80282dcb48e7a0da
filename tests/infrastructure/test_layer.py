"""The dependencies layer carries the decoder's compiled fast path, built for Lambda's arm64."""

from __future__ import annotations

import struct

from stacks.packaging import DEPENDENCIES

EM_AARCH64 = 183
ELFCLASS64 = 2


def test_layer_carries_the_compiled_decoder_for_arm64() -> None:
    # Given the layer `make lambda-deps` built (make test builds it first)
    module = DEPENDENCIES / "python" / "_dmsbus_ddbjson.abi3.so"
    # When its header is read
    binary = module.read_bytes()
    (machine,) = struct.unpack_from("<H", binary, 18)
    # Then it is a 64-bit ELF for aarch64, the architecture the functions run on,
    # and it exports the module's entry point
    assert binary[:4] == b"\x7fELF"
    assert binary[4] == ELFCLASS64
    assert machine == EM_AARCH64
    assert b"PyInit__dmsbus_ddbjson" in binary
