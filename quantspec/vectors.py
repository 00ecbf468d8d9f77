"""Conformance vectors in the Wycheproof style: export the spec's corpus with
its expected results, and check a target against exported vectors.

Layout of an export directory::

    DIR/vectors.schema.json        JSON Schema (draft 2020-12) of the files below
    DIR/<format>.json              one file per format: layout, notes, tests
    DIR/<format>/<tcId>_<name>.<array>.bin   raw little-endian payloads

Each test of ``<format>.json`` has ``tcId`` (1, 2, ...), ``name`` (the
corpus id), ``comment``, ``flags`` (from the vocabulary in ``notes``) and
payload references ``{file, dtype, shape, sha256}``:

``x``        float32 input rows (absent for decode-only tests)
``imatrix``  float32 importance weights, one per column, or null
``q``        uint8 block rows: what quantizing ``x`` gives (QuantizeTest),
             and the input of dequantization (both groups)
``y``        uint32: the bit patterns of the float32 rows that dequantizing
             ``q`` gives

An implementation conforms when it reproduces ``q`` from (``x``,
``imatrix``) byte for byte and ``y`` from ``q`` bit for bit (a NaN may have
any payload and sign where ``y`` has a NaN).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from quantspec import corpus, registry, verify
from quantspec.reference import BlockFormat, Field

SCHEMA_NAME = "vectors.schema.json"

_PAYLOAD = {
    "type": "object",
    "required": ["file", "dtype", "shape", "sha256"],
    "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "description": "path relative to the directory of the JSON file"},
        "dtype": {"enum": ["float32", "uint8", "uint32"], "description": "little-endian element type"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 2},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}

#: JSON Schema of a ``<format>.json`` file.
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://quantspec/vectors.schema.json",
    "title": "quantspec conformance vectors for one block format",
    "type": "object",
    "required": ["schema", "algorithm", "generatorVersion", "numberOfTests", "header", "notes", "format",
                 "testGroups"],
    "properties": {
        "schema": {"const": SCHEMA_NAME},
        "algorithm": {"type": "string", "description": "the format name, as quantspec.formats() lists it"},
        "generatorVersion": {"type": "string"},
        "numberOfTests": {"type": "integer", "minimum": 0},
        "header": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "object", "description": "flag -> {description}",
                  "additionalProperties": {"type": "object", "required": ["description"],
                                           "properties": {"description": {"type": "string"}}}},
        "format": {
            "type": "object",
            "required": ["name", "origin", "typeId", "blockSize", "typeSize", "rowMetaSize", "bitsPerWeight",
                         "imatrix", "upstream", "fields"],
            "properties": {
                "name": {"type": "string"},
                "origin": {"type": "string"},
                "typeId": {"type": "integer"},
                "blockSize": {"type": "integer", "minimum": 1},
                "typeSize": {"type": "integer", "minimum": 1},
                "rowMetaSize": {"type": "integer", "minimum": 0},
                "bitsPerWeight": {"type": "number"},
                "imatrix": {"enum": ["ignored", "accepted", "required"]},
                "upstream": {"type": "string"},
                "fields": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name", "ctype", "count", "offset", "meaning"],
                    "properties": {"name": {"type": "string"},
                                   "ctype": {"enum": ["u8", "i8", "u16", "i16", "u32", "f16", "bf16", "f32"]},
                                   "count": {"type": "integer", "minimum": 1},
                                   "offset": {"type": "integer", "minimum": 0},
                                   "meaning": {"type": "string"}}}},
            },
        },
        "testGroups": {"type": "array", "items": {
            "type": "object", "required": ["type", "nPerRow", "tests"],
            "properties": {
                "type": {"enum": ["QuantizeTest", "DequantizeTest"]},
                "nPerRow": {"type": "integer", "minimum": 1},
                "tests": {"type": "array", "items": {
                    "type": "object", "required": ["tcId", "name", "comment", "flags", "result", "q", "y"],
                    "properties": {
                        "tcId": {"type": "integer", "minimum": 1},
                        "name": {"type": "string"},
                        "comment": {"type": "string"},
                        "flags": {"type": "array", "items": {"type": "string"}},
                        "result": {"const": "valid"},
                        "x": _PAYLOAD,
                        "imatrix": {"oneOf": [{"type": "null"}, _PAYLOAD]},
                        "q": _PAYLOAD,
                        "y": _PAYLOAD,
                    },
                }},
            },
        }},
    },
}

HEADER = [
    "Conformance vectors of a block quantization format, generated by quantspec from its NumPy specification.",
    "QuantizeTest: quantizing x (with imatrix, if present) must give q byte for byte, and dequantizing q must "
    "give the float32 values whose bit patterns are y.",
    "DequantizeTest: dequantizing the given q must give y. Where y is a NaN, any NaN is accepted.",
    "Arithmetic: IEEE binary32, one rounding per operation in upstream C order, no fused multiply-add; fp16/bf16 "
    "conversions round half to even. Payloads are raw little-endian arrays, rows in order.",
]


class VectorFileError(ValueError):
    """A vector directory or file that is missing, malformed or corrupt."""


def _dump(path: Path, arr: np.ndarray) -> str:
    data = np.ascontiguousarray(arr).tobytes()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _payload(base: Path, rel: str, arr: np.ndarray, dtype: str) -> dict:
    le = {"float32": "<f4", "uint8": "u1", "uint32": "<u4"}[dtype]
    arr = np.ascontiguousarray(arr).astype(le, copy=False)
    return {"file": rel, "dtype": dtype, "shape": list(arr.shape), "sha256": _dump(base / rel, arr)}


def format_document(fmt: str) -> dict:
    spec = registry.spec(fmt)
    return {"name": spec.name, "origin": spec.origin, "typeId": spec.type_id, "blockSize": spec.block_size,
            "typeSize": spec.type_size, "rowMetaSize": spec.row_meta_size, "bitsPerWeight": spec.bits_per_weight,
            "imatrix": spec.imatrix, "upstream": spec.upstream,
            "fields": [{"name": f.name, "ctype": f.ctype, "count": f.count, "offset": spec.offsets()[f.name],
                        "meaning": f.meaning} for f in spec.fields]}


def export(directory, formats=None, random_cases: int = 2, seed: int = 0) -> list[Path]:
    """Write ``<format>.json`` and payloads for each format (default: all) and
    the schema into ``directory``; returns the JSON paths."""
    from quantspec import __version__

    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    (base / SCHEMA_NAME).write_text(json.dumps(SCHEMA, indent=1) + "\n", encoding="utf-8")
    written = []
    for fmt in [registry.resolve(f) for f in formats] if formats else registry.formats():
        (base / fmt).mkdir(exist_ok=True)
        n = corpus.row_length(fmt)
        groups = {"QuantizeTest": [], "DequantizeTest": []}
        used = set()
        made = verify.spec_vectors(fmt, random_cases, seed)
        # numbered in file order: every QuantizeTest, then every DequantizeTest
        ordered = [v for v in made if v.x is not None] + [v for v in made if v.x is None]
        for tc_id, v in enumerate(ordered, start=1):
            stem = f"{fmt}/{tc_id:04d}_{v.id}"
            test = {"tcId": tc_id, "name": v.id, "comment": v.comment, "flags": list(v.flags), "result": "valid"}
            if v.x is not None:
                test["x"] = _payload(base, f"{stem}.x.bin", v.x, "float32")
                test["imatrix"] = None if v.imatrix is None else _payload(base, f"{stem}.imatrix.bin",
                                                                          v.imatrix, "float32")
            test["q"] = _payload(base, f"{stem}.q.bin", v.q, "uint8")
            test["y"] = _payload(base, f"{stem}.y.bin", v.y.view(np.uint32), "uint32")
            groups["DequantizeTest" if v.x is None else "QuantizeTest"].append(test)
            used.update(v.flags)
        doc = {
            "schema": SCHEMA_NAME,
            "algorithm": fmt,
            "generatorVersion": f"quantspec {__version__}",
            "numberOfTests": sum(len(t) for t in groups.values()),
            "header": HEADER,
            "notes": {flag: {"description": corpus.FLAGS[flag]} for flag in corpus.FLAGS if flag in used},
            "format": format_document(fmt),
            "testGroups": [{"type": kind, "nPerRow": n, "tests": tests} for kind, tests in groups.items() if tests],
        }
        path = base / f"{fmt}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        written.append(path)
    return written


# ------------------------------------------------------------------- check

def validate_document(doc: dict, where: str = "") -> None:
    """Check a ``<format>.json`` document against ``SCHEMA`` (with the
    ``jsonschema`` package when it is installed, else the required keys)."""
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        try:
            jsonschema.validate(doc, SCHEMA)
        except jsonschema.ValidationError as exc:
            path = "/".join(str(p) for p in exc.absolute_path)
            raise VectorFileError(f"{where}: does not match {SCHEMA_NAME} at /{path}: {exc.message}") from None
        return
    _required(doc, SCHEMA["required"], where)
    _required(doc["format"], SCHEMA["properties"]["format"]["required"], f"{where}: format")
    for g in doc["testGroups"]:
        _required(g, ["type", "nPerRow", "tests"], f"{where}: testGroups")
        for t in g["tests"]:
            _required(t, ["tcId", "name", "comment", "flags", "result", "q", "y"], f"{where}: test")
            for key in ("x", "imatrix", "q", "y"):
                if t.get(key) is not None:
                    _required(t[key], _PAYLOAD["required"], f"{where}: test {t['tcId']} {key}")


def _required(obj, keys, where):
    if not isinstance(obj, dict):
        raise VectorFileError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise VectorFileError(f"{where}: missing {', '.join(missing)}")


def _load(base: Path, ref: dict, where: str) -> np.ndarray:
    path = base / ref["file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VectorFileError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if hashlib.sha256(data).hexdigest() != ref["sha256"]:
        raise VectorFileError(f"{where}: {path} does not match its sha256 {ref['sha256']}")
    dtype = {"float32": "<f4", "uint8": "u1", "uint32": "<u4"}[ref["dtype"]]
    shape = tuple(ref["shape"])
    if len(data) != int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize:
        raise VectorFileError(f"{where}: {path} holds {len(data)} bytes, not {ref['dtype']} {list(shape)}")
    native = {"float32": np.float32, "uint8": np.uint8, "uint32": np.uint32}[ref["dtype"]]
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(native)  # a writable native copy


def layout(doc_format: dict) -> BlockFormat:
    """The BlockFormat a vector file describes (for naming fields in reports)."""
    return BlockFormat(
        name=doc_format["name"], origin=doc_format["origin"], type_id=doc_format["typeId"],
        block_size=doc_format["blockSize"], vec_dot_format=None, upstream=doc_format["upstream"],
        row_meta_size=doc_format["rowMetaSize"], imatrix=doc_format["imatrix"],
        fields=tuple(Field(f["name"], f["ctype"], f["count"], f["meaning"]) for f in doc_format["fields"]))


def load(path) -> tuple[str, BlockFormat, list[verify.Vector]]:
    """One ``<format>.json``: its format name, layout and vectors (payloads
    checked against their sha256)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VectorFileError(f"{path}: not a readable JSON file: {exc}") from None
    validate_document(doc, str(path))
    lay = layout(doc["format"])
    if lay.type_size != doc["format"]["typeSize"]:
        raise VectorFileError(f"{path}: fields add up to {lay.type_size} bytes, typeSize says "
                              f"{doc['format']['typeSize']}")
    vectors = []
    for group in doc["testGroups"]:
        for t in group["tests"]:
            where = f"{path.name} tcId {t['tcId']} ({t['name']})"
            x = _load(path.parent, t["x"], where) if t.get("x") else None
            im = _load(path.parent, t["imatrix"], where) if t.get("imatrix") else None
            q = _load(path.parent, t["q"], where)
            y = _load(path.parent, t["y"], where).view(np.float32)
            vectors.append(verify.Vector(f"{t['tcId']}:{t['name']}", t["comment"], tuple(t["flags"]), x, im, q, y))
    return doc["algorithm"], lay, vectors


def documents(directory, formats=None) -> list[Path]:
    base = Path(directory)
    if not base.is_dir():
        raise VectorFileError(f"{base}: no such directory")
    paths = sorted(p for p in base.glob("*.json") if p.name != SCHEMA_NAME)
    if formats:
        wanted = {f.lower() for f in formats}
        missing = wanted - {p.stem for p in paths}
        if missing:
            raise VectorFileError(f"{base}: no vectors for {', '.join(sorted(missing))}")
        paths = [p for p in paths if p.stem in wanted]
    if not paths:
        raise VectorFileError(f"{base}: no <format>.json vector files")
    return paths


class _Guarded(verify.Target):
    """A target asked about a format quantspec's registry may not have."""

    def __init__(self, target):
        self.target, self.name = target, target.name

    def supports(self, fmt):
        try:
            return self.target.supports(fmt)
        except ValueError as exc:  # unknown to this quantspec's registry
            return str(exc)

    def quantize(self, fmt, x, imatrix):
        return self.target.quantize(fmt, x, imatrix)

    def dequantize(self, fmt, q):
        return self.target.dequantize(fmt, q)


def check(directory, target: verify.Target, formats=None, ops=verify.OPS) -> list[verify.Outcome]:
    """Run the vectors in ``directory`` through ``target``."""
    outcomes = []
    guarded = _Guarded(target)
    for path in documents(directory, formats):
        name, lay, vecs = load(path)
        outcomes += verify.check(guarded, name, lay, vecs, ops)
    return outcomes
