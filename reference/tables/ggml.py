"""ggml's value tables of the non-linear 4-bit formats.

Facts carried over verbatim, with their upstream names, from ggml
``src/ggml-common.h`` @ d99724f2b141fed9e1a9f402213506c081433465 (MIT):

* ``KVALUES_IQ4NL`` (``kvalues_iq4nl``): the 16 levels of IQ4_NL and
  IQ4_XS, sorted ascending (the quantizers' binary search relies on it).
* ``KVALUES_MXFP4`` (``kvalues_fp4``, ``#define kvalues_mxfp4``): the 16
  E2M1 values of MXFP4 and NVFP4, doubled so that they are integers: code
  ``s eee m`` -> sign ``s``, magnitude 2 * E2M1 = 0, 1, 2, 3, 4, 6, 8, 12.
  The block scales absorb the factor 2 (``GGML_E8M0_TO_FP32_HALF``,
  ``ggml_ue4m3_to_fp32`` both return half the scale). Code 8 is "-0": its
  value is 0, like code 0.

``tests/reference/test_tables.py`` pins both by checksum.
"""

import numpy as np

KVALUES_IQ4NL = np.array([
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
], dtype=np.int8)

KVALUES_MXFP4 = np.array([
    0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12,
], dtype=np.int8)

for _table in (KVALUES_IQ4NL, KVALUES_MXFP4):
    _table.flags.writeable = False
del _table
